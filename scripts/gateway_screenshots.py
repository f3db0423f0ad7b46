"""Make the gateway screenshots in docs/ with a real headless Chromium (Debian's ``chromium`` package).

Starts the test suite's look-alike hub with a poisoned checkpoint (the corpus's
``torch-zip-reduce-in-state-dict``; needs torch), puts the gateway in front, asks for the file (refused),
and photographs its evidence page at desktop and phone widths:

    python scripts/gateway_screenshots.py [OUTPUT_DIR]   # default: docs/
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(out: Path) -> int:
    import httpx

    from picklewarden.server.app import create_app
    from picklewarden.server.config import GatewayConfig
    from tests.corpus import ALL
    from tests.server_support import FakeHub, ServerThread

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        print("needs chromium (apt-get install chromium)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as work:
        (sample,) = [s for s in ALL if s.id == "torch-zip-reduce-in-state-dict"]
        hub = FakeHub()
        hub.add("mallory/free-weights", {"pytorch_model.bin": sample.make(Path(work) / "canary")})
        with ServerThread(hub.app()) as upstream:
            config = GatewayConfig(upstream=upstream.url, data_dir=Path(work) / "gw")
            with ServerThread(create_app(config)) as gateway:
                refused = httpx.get(f"{gateway.url}/mallory/free-weights/resolve/main/pytorch_model.bin")
                report_url = refused.json()["report_url"]
                for name, size in (("gateway-evidence.png", "1100,1500"), ("gateway-evidence-phone.png", "412,1400")):
                    subprocess.run(
                        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                         f"--window-size={size}", f"--screenshot={out / name}", report_url],
                        check=True, capture_output=True, timeout=120,
                    )  # fmt: skip
                    print(out / name)
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs"))
