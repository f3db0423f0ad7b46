"""Load test of the scanning gateway on loopback: many concurrent clients, a mix of cached and new files.

    python benchmarks/gateway_load.py [--clients 50] [--requests 2000] [--files 200] [--json]

Starts the test suite's look-alike hub (tests/server_support.py) holding ``--files`` distinct benign
pickles (1-256 KiB) and the gateway in front (SQLite store), then ``--clients`` asyncio clients share
``--requests`` GETs of files picked at random (so early requests miss the cache and later ones hit it).
Reports requests per second and p50/p99 latency, and checks the two promises that matter under load:
no scan is duplicated (one scan per distinct file requested, one upstream download each) and no result
is lost (every requested file has its judgement in the store and through the API).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import pickle
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


async def _clients(url: str, names: list[str], clients: int, requests: int) -> list[float]:
    import httpx

    queue: asyncio.Queue[str] = asyncio.Queue()
    rng = random.Random(0)
    for _ in range(requests):
        queue.put_nowait(rng.choice(names))
    latencies: list[float] = []

    async def client() -> None:
        async with httpx.AsyncClient(timeout=120) as http:
            while not queue.empty():
                name = queue.get_nowait()
                start = time.perf_counter()
                response = await http.get(f"{url}/bench/load/resolve/main/{name}")
                response.raise_for_status()
                latencies.append(time.perf_counter() - start)

    await asyncio.gather(*(client() for _ in range(clients)))
    return latencies


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    import httpx

    from picklewarden.server.app import create_app
    from picklewarden.server.config import GatewayConfig
    from tests.server_support import FakeHub, ServerThread

    rng = random.Random(1)
    files = {f"shard-{i:05d}.pkl": pickle.dumps({"i": i, "w": rng.randbytes(rng.randint(1, 256) * 1024)}, 4)
             for i in range(args.files)}  # fmt: skip
    hub = FakeHub()
    hub.add("bench/load", files)
    with tempfile.TemporaryDirectory() as work, ServerThread(hub.app()) as upstream:
        app = create_app(GatewayConfig(upstream=upstream.url, data_dir=Path(work)))
        with ServerThread(app) as gateway:
            start = time.perf_counter()
            latencies = asyncio.run(_clients(gateway.url, sorted(files), args.clients, args.requests))
            elapsed = time.perf_counter() - start
            core = app.state.gateway
            requested = {name for name in files if hub.downloads[name]}
            # Every requested file must be listed for its repo, with a judgement the API still returns.
            listed = httpx.get(f"{gateway.url}/api/v1/repos/bench/load").json()["files"]
            kept = {f["path"] for f in listed if httpx.get(f"{gateway.url}/api/v1/scans/{f['scan_id']}").is_success}
    quantiles = statistics.quantiles(latencies, n=100)
    result = {
        "requests": len(latencies),
        "clients": args.clients,
        "distinct_files": len(requested),
        "rps": round(len(latencies) / elapsed, 1),
        "p50_ms": round(quantiles[49] * 1000, 1),
        "p99_ms": round(quantiles[98] * 1000, 1),
        "upstream_downloads": sum(hub.downloads.values()),
        "scans": core.scans_run,
        "scans_duplicated": core.scans_run - len(requested),
        "results_lost": len(requested - kept),
    }
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>20}: {value}")
    ok = result["scans_duplicated"] == 0 and result["results_lost"] == 0
    ok = ok and result["upstream_downloads"] == len(requested)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
