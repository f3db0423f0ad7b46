"""The evidence page in a real headless Chromium (Debian's ``chromium``): rendered offline, flagged call shown.

Chromium is driven through its own command line (``--dump-dom`` gives the DOM after rendering,
``--screenshot`` a PNG), so no driver package is needed. In CI a missing Chromium is a failure: ``.ci/run``
installs it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from picklewarden.server.app import create_app
from picklewarden.server.config import GatewayConfig
from tests.corpus import ALL
from tests.server_support import FakeHub, ServerThread


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed: CI must install it (see .ci/run)")
        pytest.skip("chromium not installed (apt-get install chromium)")
    return found


def test_evidence_page_in_headless_chromium(tmp_path: Path) -> None:
    browser = _chromium()
    (sample,) = [s for s in ALL if s.id == "p4-os-system"]
    hub = FakeHub()
    hub.add("mallory/pickles", {"model.pkl": sample.make(tmp_path / "canary")})
    with ServerThread(hub.app()) as upstream:
        with ServerThread(create_app(GatewayConfig(upstream=upstream.url, data_dir=tmp_path / "gw"))) as gw:
            report_url = httpx.get(f"{gw.url}/mallory/pickles/resolve/main/model.pkl").json()["report_url"]
            base = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=412,1200"]
            dom = subprocess.run(
                [*base, "--dump-dom", report_url], capture_output=True, text=True, timeout=120, check=True
            ).stdout
            shot = tmp_path / "page.png"
            subprocess.run([*base, f"--screenshot={shot}", report_url], capture_output=True, timeout=120, check=True)
    assert "mallory/pickles:model.pkl" in dom
    flagged = re.findall(r'<span class="line malicious">([^<]*)</span>', dom)
    assert any("system(" in line for line in flagged), dom[-3000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
