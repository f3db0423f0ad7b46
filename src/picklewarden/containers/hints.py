"""File extensions as hints: formats are detected by content, and a disagreeing extension is reported.

Pickle-family names (``.pt``, ``.bin``, ``.pkl``, ``.ckpt``, ``.joblib``...) may hold any pickle-bearing
format: torch, joblib and numpy all choose by content. A name that promises data which cannot run code
(``.safetensors``, ``.onnx``, ``.json``, images...) on a file whose loaders unpickle is a disguise (low);
any other disagreement (a ``.gz`` that is not gzip) is noted at info level.
"""

from __future__ import annotations

import posixpath

from picklewarden.containers.base import Anomaly
from picklewarden.model import Severity

_EXPECTED: dict[str, frozenset[str]] = {
    ".npy": frozenset({"npy", "npy-object"}),
    ".npz": frozenset({"npz", "zip"}),
    ".gz": frozenset({"gzip"}),
    ".tgz": frozenset({"gzip"}),
    ".bz2": frozenset({"bz2"}),
    ".tbz2": frozenset({"bz2"}),
    ".xz": frozenset({"xz"}),
    ".txz": frozenset({"xz"}),
    ".lzma": frozenset({"lzma"}),
    ".lz4": frozenset({"lz4"}),
    ".z": frozenset({"zlib", "joblib-zfile"}),
    ".zip": frozenset({"zip", "npz", "torch-zip", "torchscript"}),
    ".tar": frozenset({"tar", "torch-legacy-tar"}),
    ".7z": frozenset({"7z"}),
}
_DATA_ONLY = frozenset(
    ".safetensors .onnx .gguf .ggml .h5 .hdf5 .tflite .pb .json .yaml .yml .txt .csv .tsv .msgpack .parquet "
    ".arrow .feather .png .jpg .jpeg .gif .bmp .webp .wav .mp3 .md .pdf".split()
)


def extension(name: str) -> str:
    return posixpath.splitext(name.replace("\\", "/").lower())[1]


def extension_anomaly(name: str, format: str, runs_pickles: bool, member: str | None = None) -> Anomaly | None:
    """A finding when ``name``'s extension disagrees with the detected ``format`` (e.g. ``gzip>tar``)."""
    ext = extension(name)
    outer = format.split(">", 1)[0]
    if ext in _DATA_ONLY and runs_pickles:
        return Anomaly(
            "PW303",
            member,
            None,
            f"named {ext} (a format that cannot run code) but the content is {format}, which loaders unpickle",
        )
    expected = _EXPECTED.get(ext)
    if expected is None or outer in expected or outer in ("unknown", "pickle?"):
        return None
    if ext == ".npy" and runs_pickles:
        return Anomaly(
            "PW303",
            member,
            None,
            f"named .npy but the content is {format}: numpy.load(allow_pickle=True) unpickles it",
        )
    return Anomaly("PW303", member, None, f"named {ext} but the content is {format}", Severity.INFO)
