"""The gateway as a Hugging Face proxy, driven by the real ``huggingface_hub`` client and by httpx.

A fake hub (tests/server_support.py) and the gateway run as real uvicorn servers on 127.0.0.1. The
malicious file is the corpus's ``torch-zip-reduce-in-state-dict`` (tests/test_corpus_fires.py proves it runs
its payload under ``torch.load``); the benign one is the corpus's state dict, which must arrive intact and
load under ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import http.client
import json
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from picklewarden.policy.config import parse
from picklewarden.server.app import create_app
from picklewarden.server.config import GatewayConfig
from tests.corpus import ALL
from tests.server_support import TOKEN, FakeHub, ServerThread, closed_port

pytest.importorskip("torch")

REPO = "acme/resnet-tiny"
EVIL = "mallory/free-weights"


def _sample(sample_id: str, tmp: Path) -> bytes:
    (sample,) = [s for s in ALL if s.id == sample_id]
    return sample.make(tmp / "canary")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    tmp = tmp_path_factory.mktemp("samples")
    config = {"architectures": ["TinyNet"], "auto_map": {"AutoModel": "modeling_tiny.TinyNet"}}
    return {
        "benign": _sample("benign-torch-zip-state-dict", tmp),
        "evil": _sample("torch-zip-reduce-in-state-dict", tmp),
        "scaler": _sample("benign-custom-class-instance", tmp),
        "config": json.dumps(config).encode(),
        "modeling": b"import torch\n\nclass TinyNet(torch.nn.Module):\n    pass\n",
    }


@pytest.fixture
def hub(files: dict[str, bytes]) -> FakeHub:
    hub = FakeHub()
    hub.add(
        REPO,
        {
            "pytorch_model.bin": files["benign"],
            "config.json": files["config"],
            "modeling_tiny.py": files["modeling"],
            "README.md": b"# tiny\n",
        },
    )
    hub.add(EVIL, {"pytorch_model.bin": files["evil"], "config.json": b"{}"})
    hub.add("alice/secret", {"weights.pt": files["benign"]}, private=True)
    hub.add("acme/scaler", {"scaler.pkl": files["scaler"]})
    hub.add("acme/public-copy", {"weights.pt": files["benign"]})
    hub.add("acme/data", {"train.pkl": files["benign"]}, repo_type="dataset")
    return hub


class Stack:
    def __init__(self, hub: FakeHub, data_dir: Path, **options: object) -> None:
        self.hub = hub
        self.data_dir = data_dir
        self.options = options
        self.hub_server = ServerThread(hub.app())

    def gateway(self, upstream: str | None = None, **options: object) -> ServerThread:
        config = GatewayConfig(
            upstream=upstream or self.hub_server.url, data_dir=self.data_dir, **{**self.options, **options}
        )  # type: ignore[arg-type]
        return ServerThread(create_app(config))


@pytest.fixture
def stack(hub: FakeHub, tmp_path: Path) -> Iterator[Stack]:
    s = Stack(hub, tmp_path / "gw", token="gw-admin", read_timeout=2.0)
    with s.hub_server:
        yield s


@pytest.fixture
def gw(stack: Stack) -> Iterator[ServerThread]:
    with stack.gateway() as server:
        yield server


def _download(endpoint: str, repo: str, filename: str, cache: Path, **kwargs: object) -> str:
    from huggingface_hub import hf_hub_download

    return hf_hub_download(repo, filename, endpoint=endpoint, cache_dir=cache, **kwargs)  # type: ignore[arg-type]


def test_benign_checkpoint_arrives_byte_identical_and_loads(
    gw: ServerThread, files: dict[str, bytes], tmp_path: Path
) -> None:
    import torch

    path = _download(gw.url, REPO, "pytorch_model.bin", tmp_path / "hf")
    assert Path(path).read_bytes() == files["benign"]
    state = torch.load(path, weights_only=True)
    assert state and all(isinstance(v, torch.Tensor) for v in state.values())
    head = httpx.head(f"{gw.url}/{REPO}/resolve/main/pytorch_model.bin")
    assert head.status_code == 200
    assert head.headers["X-Picklewarden-Verdict"] == "safe"
    assert head.headers["ETag"] == f'"{hashlib.sha256(files["benign"]).hexdigest()}"'
    assert head.headers["Content-Length"] == str(len(files["benign"]))
    assert len(head.headers["X-Repo-Commit"]) == 40


def test_malicious_checkpoint_is_refused_with_evidence(gw: ServerThread, tmp_path: Path) -> None:
    from huggingface_hub.errors import HfHubHTTPError

    with pytest.raises(HfHubHTTPError) as caught:
        _download(gw.url, EVIL, "pytorch_model.bin", tmp_path / "hf")
    assert caught.value.response.status_code == 403
    message = str(caught.value)
    assert "picklewarden refused mallory/free-weights:pytorch_model.bin: malicious" in message
    assert not list((tmp_path / "hf").rglob("pytorch_model.bin"))

    # HEAD describes the file, verdict included; the GET that would deliver it is refused.
    head = httpx.head(f"{gw.url}/{EVIL}/resolve/main/pytorch_model.bin")
    assert head.status_code == 200 and head.headers["X-Picklewarden-Verdict"] == "malicious"
    response = httpx.get(f"{gw.url}/{EVIL}/resolve/main/pytorch_model.bin")
    assert response.status_code == 403
    assert response.headers["X-Picklewarden-Verdict"] == "malicious"
    body = response.json()
    assert body["verdict"] == "malicious"
    assert any(f["severity"] == "critical" and "system" in f["symbol"] for f in body["findings"])
    page = httpx.get(body["report_url"])
    assert page.status_code == 200
    assert "text/html" in page.headers["content-type"]
    # The decompiled call, on a line flagged malicious, with the payload as an indicator.
    flagged = re.findall(r'<span class="line malicious">([^<]*)</span>', page.text)
    assert any("system(" in line and "touch" in line for line in flagged), flagged
    # Self-contained: no script, and every link or resource is the gateway's own.
    assert "<script" not in page.text
    assert all(link.startswith(gw.url) for link in re.findall(r'(?:href|src)="([^"]*)"', page.text))
    assert httpx.get(page.url.copy_with(path=page.url.path + ".json")).json()["files"][0]["verdict"] == "malicious"


def test_huggingface_hub_unchanged_with_hf_endpoint(gw: ServerThread, files: dict[str, bytes], tmp_path: Path) -> None:
    """A fresh interpreter configured only by HF_ENDPOINT: snapshot_download, hf_hub_download and the CLI."""
    script = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        from huggingface_hub import hf_hub_download, snapshot_download
        from huggingface_hub.errors import HfHubHTTPError
        folder = snapshot_download({REPO!r})
        print("SNAPSHOT", folder)
        try:
            hf_hub_download({EVIL!r}, "pytorch_model.bin")
        except HfHubHTTPError as exc:
            print("REFUSED", exc.response.status_code, str(exc).replace(chr(10), " "))
        """
    )
    env = {**os.environ, "HF_ENDPOINT": gw.url, "HF_HOME": str(tmp_path / "home"), "HF_HUB_DISABLE_TELEMETRY": "1"}
    run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    folder = Path(run.stdout.split("SNAPSHOT ", 1)[1].splitlines()[0])
    assert (folder / "pytorch_model.bin").read_bytes() == files["benign"]
    assert (folder / "config.json").read_bytes() == files["config"]
    assert (folder / "modeling_tiny.py").read_bytes() == files["modeling"]
    assert "REFUSED 403" in run.stdout and "free-weights:pytorch_model.bin: malicious" in run.stdout

    cli = Path(sys.executable).parent / "hf"
    out = subprocess.run(
        [str(cli), "download", EVIL, "pytorch_model.bin"], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode != 0
    assert "free-weights:pytorch_model.bin: malicious" in out.stdout + out.stderr

    # The repo page and API list the code a trust_remote_code load would import.
    page = httpx.get(f"{gw.url}/ui/repos/model/{REPO}").text
    assert (
        "brings its own code" in page and "modeling_tiny.py" in page and "AutoModel -&gt; modeling_tiny.TinyNet" in page
    )
    repo = httpx.get(f"{gw.url}/api/v1/repos/{REPO}").json()
    assert repo["brings_code"] is True
    assert {f["path"]: f["verdict"] for f in repo["files"]}["pytorch_model.bin"] == "safe"


def test_tree_listing_loses_xet_hashes(gw: ServerThread) -> None:
    listing = httpx.get(f"{gw.url}/api/models/{REPO}/tree/main", params={"recursive": "true"}).json()
    lfs = next(e for e in listing if e["path"] == "pytorch_model.bin")
    assert "lfs" in lfs and "xetHash" not in lfs


def test_metadata_relay_bounds_request_bodies(gw: ServerThread) -> None:
    url = f"{gw.url}/api/models/{REPO}/paths-info/main"
    assert httpx.post(url, content=b"x" * ((1 << 20) + 1)).status_code == 413
    assert (
        httpx.post(url, data={"paths": ["config.json"]}).status_code == 404
    )  # relayed: the fake hub has no such route


def test_range_requests(gw: ServerThread, files: dict[str, bytes]) -> None:
    url = f"{gw.url}/{REPO}/resolve/main/pytorch_model.bin"
    response = httpx.get(url, headers={"Range": "bytes=100-199"})
    assert response.status_code == 206
    assert response.content == files["benign"][100:200]
    assert response.headers["Content-Range"] == f"bytes 100-199/{len(files['benign'])}"
    assert httpx.get(url, headers={"Range": "bytes=-10"}).content == files["benign"][-10:]


def test_dataset_route(gw: ServerThread, files: dict[str, bytes], tmp_path: Path) -> None:
    path = _download(gw.url, "acme/data", "train.pkl", tmp_path / "hf", repo_type="dataset")
    assert Path(path).read_bytes() == files["benign"]


@pytest.mark.parametrize("fault", ["corrupt", "truncate"])
def test_bad_upstream_body_is_refused_and_never_cached(
    stack: Stack, gw: ServerThread, files: dict[str, bytes], fault: str
) -> None:
    getattr(stack.hub, fault).add("pytorch_model.bin")
    url = f"{gw.url}/{REPO}/resolve/main/pytorch_model.bin"
    response = httpx.get(url)
    assert response.status_code == 502
    assert "upstream" in response.json()["error"]
    blobs = stack.data_dir / "blobs"
    assert not [p for p in blobs.rglob("*") if p.is_file()]  # neither a blob nor a stray partial download
    getattr(stack.hub, fault).clear()
    fetched = stack.hub.downloads["pytorch_model.bin"]
    assert httpx.get(url).content == files["benign"]
    assert stack.hub.downloads["pytorch_model.bin"] == fetched + 1  # fetched again: nothing bad was kept


def test_single_flight(stack: Stack, gw: ServerThread, files: dict[str, bytes]) -> None:
    url = f"{gw.url}/{REPO}/resolve/main/pytorch_model.bin"
    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        bodies = list(pool.map(lambda _: httpx.get(url, timeout=60).content, range(20)))
    assert all(b == files["benign"] for b in bodies)
    assert stack.hub.downloads["pytorch_model.bin"] <= 2
    assert gw.server.config.app.state.gateway.scans_run == 1


def test_results_survive_restart_and_a_new_policy_rejudges(stack: Stack, files: dict[str, bytes]) -> None:
    url = f"/{EVIL}/resolve/main/pytorch_model.bin"
    with stack.gateway() as first:
        before = httpx.get(first.url + url).json()
    with stack.gateway() as second:
        after = httpx.get(second.url + url).json()
        assert second.server.config.app.state.gateway.scans_run == 0
    assert after["report_url"].rsplit("/", 1)[1] == before["report_url"].rsplit("/", 1)[1]
    assert stack.hub.downloads["pytorch_model.bin"] == 1
    # A new policy (here one accepting the sink) changes the judgement: the cached bytes are judged again, not
    # fetched again.
    policy = parse({"override": {"allow_dangerous": ["PW100", "PW101", "PW102", "posix.system", "os.system"]},
                    "severity": {"PW100": "info", "PW101": "info", "PW102": "info"}})  # fmt: skip
    with stack.gateway(policy=policy) as third:
        judged = httpx.get(third.url + url)
        assert third.server.config.app.state.gateway.scans_run == 1
    assert stack.hub.downloads["pytorch_model.bin"] == 1
    # The operator's explicit override now lets the file through: proof it was judged again, under the policy.
    assert judged.status_code == 200 and judged.content == files["evil"]
    assert judged.headers["X-Picklewarden-Verdict"] == "safe"
    assert judged.headers["X-Picklewarden-Report"].rsplit("/", 1)[1] != before["report_url"].rsplit("/", 1)[1]


def test_private_file_is_not_served_to_another_user(gw: ServerThread, files: dict[str, bytes], tmp_path: Path) -> None:
    from huggingface_hub.errors import RepositoryNotFoundError

    path = _download(gw.url, "alice/secret", "weights.pt", tmp_path / "alice", token=TOKEN)
    assert Path(path).read_bytes() == files["benign"]
    with pytest.raises(RepositoryNotFoundError):
        _download(gw.url, "alice/secret", "weights.pt", tmp_path / "bob", token=False)
    response = httpx.get(f"{gw.url}/alice/secret/resolve/main/weights.pt")
    assert response.status_code == 401 and response.content != files["benign"]
    # Its judgement is private too: not on the dashboard, nor in the API without the gateway token.
    scan_id = (
        httpx.head(f"{gw.url}/alice/secret/resolve/main/weights.pt", headers={"Authorization": f"Bearer {TOKEN}"})
        .headers["X-Picklewarden-Report"]
        .rsplit("/", 1)[1]
    )
    assert httpx.get(f"{gw.url}/api/v1/scans/{scan_id}").status_code == 404
    assert (
        httpx.get(f"{gw.url}/api/v1/scans/{scan_id}", headers={"Authorization": "Bearer gw-admin"}).status_code == 200
    )
    assert "alice/secret" not in httpx.get(gw.url + "/").text
    # The same bytes published in a public repository: its judgement turns public under the public name only.
    report = httpx.head(
        f"{gw.url}/acme/public-copy/resolve/main/weights.pt", headers={"Authorization": f"Bearer {TOKEN}"}
    ).headers["X-Picklewarden-Report"]
    assert report.endswith(scan_id)
    page = httpx.get(report).text
    assert "acme/public-copy:weights.pt" in page and "alice" not in page and "secret" not in page
    # A token sent for a public repository (most clients always send one) keeps its judgement public.
    public = httpx.head(f"{gw.url}/{REPO}/resolve/main/README.md", headers={"Authorization": f"Bearer {TOKEN}"})
    assert httpx.get(public.headers["X-Picklewarden-Report"]).status_code == 200


def test_upstream_unreachable_is_502(stack: Stack) -> None:
    with stack.gateway(upstream=f"http://127.0.0.1:{closed_port()}") as gw:
        response = httpx.get(f"{gw.url}/{REPO}/resolve/main/config.json")
        assert response.status_code == 502
        assert "unreachable" in response.json()["error"]
        assert httpx.get(f"{gw.url}/api/models/{REPO}").status_code == 502


def test_upstream_timeout_is_504(stack: Stack, gw: ServerThread) -> None:
    stack.hub.hang.add("config.json")
    response = httpx.get(f"{gw.url}/{REPO}/resolve/main/config.json", timeout=30)
    assert response.status_code == 504
    assert "timed out" in response.json()["error"]


def test_upstream_500_is_502(stack: Stack, gw: ServerThread) -> None:
    stack.hub.broken = True
    assert httpx.get(f"{gw.url}/{REPO}/resolve/main/config.json").status_code == 502


@pytest.mark.parametrize(
    "path",
    [
        f"/{REPO}/resolve/main/../../../etc/passwd",
        f"/{REPO}/resolve/main/a/%2e%2e/b",
        "/x/resolve/main/a%5cb",
        "/api/../etc",
    ],
)
def test_path_traversal_is_refused(gw: ServerThread, stack: Stack, path: str) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    connection.request("GET", path)  # http.client sends the path as written: no client-side normalisation
    response = connection.getresponse()
    assert response.status == 400, response.read()
    assert sum(stack.hub.downloads.values()) == 0


def test_suspicious_is_refused_by_default_and_served_by_policy(
    stack: Stack, gw: ServerThread, files: dict[str, bytes]
) -> None:
    """A pickle of a project's own class (an unknown global): refused by default, the policy decides."""
    path = "/acme/scaler/resolve/main/scaler.pkl"
    refused = httpx.get(gw.url + path)
    assert refused.status_code == 403 and refused.json()["verdict"] == "suspicious"
    with stack.gateway(policy=parse({"fail_on": "malicious"})) as lenient:
        served = httpx.get(lenient.url + path)
    assert served.status_code == 200 and served.content == files["scaler"]
    assert served.headers["X-Picklewarden-Verdict"] == "suspicious"
    with stack.gateway(policy=parse({"trust": ["tests._benign_models"]})) as trusting:
        trusted = httpx.get(trusting.url + path)
    assert trusted.status_code == 200 and trusted.headers["X-Picklewarden-Verdict"] == "safe"


def test_transformers_from_pretrained_through_the_gateway(
    stack: Stack, gw: ServerThread, files: dict[str, bytes], tmp_path: Path
) -> None:
    """``from_pretrained`` with only HF_ENDPOINT set: a benign checkpoint loads, a poisoned one fails with
    the gateway's reason in the error the user reads."""
    import io

    import torch
    from transformers import BertConfig, BertModel

    config = BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16, vocab_size=20)
    buffer = io.BytesIO()
    torch.save(BertModel(config).state_dict(), buffer)
    stack.hub.add(
        "acme/tiny-bert", {"config.json": config.to_json_string().encode(), "pytorch_model.bin": buffer.getvalue()}
    )
    stack.hub.add(
        "mallory/tiny-bert", {"config.json": config.to_json_string().encode(), "pytorch_model.bin": files["evil"]}
    )
    script = textwrap.dedent(
        """
        from transformers import AutoModel
        print("LOADED", type(AutoModel.from_pretrained("acme/tiny-bert")).__name__)
        try:
            AutoModel.from_pretrained("mallory/tiny-bert")
        except OSError as exc:
            print("REFUSED", str(exc).replace(chr(10), " "))
        """
    )
    env = {**os.environ, "HF_ENDPOINT": gw.url, "HF_HOME": str(tmp_path / "home"), "HF_HUB_DISABLE_TELEMETRY": "1"}
    run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "LOADED BertModel" in run.stdout
    assert (
        "REFUSED" in run.stdout
        and "403 Forbidden: picklewarden refused mallory/tiny-bert:pytorch_model.bin: malicious" in run.stdout
    )
