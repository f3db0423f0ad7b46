"""``picklewarden serve`` as an operator starts it: a real process, a policy and token file, SIGTERM to stop."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.corpus import ALL
from tests.server_support import FakeHub, ServerThread, closed_port


def test_serve_command(tmp_path: Path) -> None:
    (sample,) = [s for s in ALL if s.id == "p2-posix-system"]
    evil = sample.make(tmp_path / "canary")
    hub = FakeHub()
    hub.add("mallory/pickles", {"model.pkl": evil, "notes.txt": b"hello\n"})
    (tmp_path / "token").write_text("s3cret\n")
    (tmp_path / "policy.toml").write_text('fail_on = "malicious"\n')
    port = closed_port()
    with ServerThread(hub.app()) as upstream:
        argv = [sys.executable, "-m", "picklewarden", "serve", "--port", str(port), "--upstream", upstream.url,
                "--data-dir", str(tmp_path / "data"), "--policy", str(tmp_path / "policy.toml"),
                "--token-file", str(tmp_path / "token")]  # fmt: skip
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"{base}/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert process.poll() is None and time.monotonic() < deadline, "gateway did not start"
                time.sleep(0.1)
            assert httpx.get(f"{base}/mallory/pickles/resolve/main/notes.txt").content == b"hello\n"
            refused = httpx.get(f"{base}/mallory/pickles/resolve/main/model.pkl")
            assert refused.status_code == 403 and refused.json()["verdict"] == "malicious"
            upload = httpx.post(
                f"{base}/api/v1/scans", files={"file": ("m.pkl", evil)}, headers={"Authorization": "Bearer s3cret"}
            )
            assert upload.json()["verdict"] == "malicious"
        finally:
            process.send_signal(signal.SIGTERM)
            output, _ = process.communicate(timeout=60)
    # A graceful stop: requests drained and the store closed; uvicorn then re-raises SIGTERM on itself.
    assert process.returncode in (0, -signal.SIGTERM), output
    assert "Application shutdown complete" in output
    assert (tmp_path / "data" / "picklewarden.db").is_file()
