"""Model formats that are not pickles: recognised by content, read without running anything.

Data-only formats (safetensors, GGUF, ONNX) are validated and said to be no pickle; formats that can run
code when loaded are reviewed against picklewarden's knowledge: Keras configs (Lambda bytecode, callables
by module name), Hydra/OmegaConf and PyYAML configs (``_target_``, python tags), Jinja chat templates,
ONNX external data, executables posing as models, and transformers' ``auto_map`` remote code.
"""

from __future__ import annotations

import posixpath

from picklewarden.containers.base import Context, Data, Opened, PickleSource, Stacking
from picklewarden.containers.sniff import looks_like_pickle

_YAML_NAMES = frozenset({".yaml", ".yml"})


def sniff(head: bytes) -> str | None:
    """The non-pickle format ``head`` starts, for picking model files out of a directory walk: strong magic
    numbers, and configs that name code (scripts and plain text are left out)."""
    from picklewarden.formats import configs, executables, gguf, hdf5, safetensors

    what = executables.kind(head)
    if what is not None and what != "script":
        return "executable"
    if head.startswith(gguf.MAGIC):
        return "gguf"
    if hdf5.looks_like(head):
        return "hdf5"
    if safetensors.looks_like(head):
        return "safetensors"
    text = head.lstrip()
    if text.startswith(b"{") and any(marker in head for marker in configs.JSON_MARKERS):
        return "json"
    if any(marker in head for marker in configs.YAML_MARKERS) and b"\x00" not in head:
        return "yaml"
    return None


def open_format(data: Data, head: bytes, ctx: Context) -> Opened | None:
    """The reader for a non-pickle format, or None when ``data`` is none of them."""
    opened = _open(data, head, ctx)
    if opened is not None and looks_like_pickle(head, ctx.limits):
        # pickle.load does not sniff: a file that is also a pickle is judged as one too.
        opened.sources.append(PickleSource("", data, Stacking.ALL, True, optional=True, label="pickle view"))
    return opened


def _open(data: Data, head: bytes, ctx: Context) -> Opened | None:
    from picklewarden.formats import configs, executables, gguf, hdf5, onnx, safetensors

    what = executables.kind(head)
    if what is not None:
        opened = executables.open_executable(data, what)
        if what == "llamafile":
            from picklewarden.containers import archives

            inner = archives.open_zip_bundle(data, ctx)
            opened.children.extend(inner.children)
            opened.anomalies.extend(inner.anomalies)
            opened.errors.extend(inner.errors)
        return opened
    if head.startswith(gguf.MAGIC):
        return gguf.open_gguf(data)
    if hdf5.looks_like(head):
        return hdf5.open_hdf5(data)
    if safetensors.looks_like(head):
        return safetensors.open_safetensors(data)
    if onnx.looks_like(data, head):
        return onnx.open_onnx(data)
    if head.lstrip()[:1] == b"{" or _extension(ctx.name) in _YAML_NAMES or any(m in head for m in configs.YAML_MARKERS):
        text = configs.as_text(data)
        if text is None:
            return None
        value = configs.parse_json(text) if text.lstrip().startswith("{") else None
        if isinstance(value, dict):
            return configs.open_json(value, posixpath.basename(ctx.name))
        opened = configs.open_yaml(text)
        if _extension(ctx.name) not in _YAML_NAMES and opened.errors and not opened.anomalies:
            return None  # text that merely mentions a marker: not a config
        return opened
    return None


def _extension(name: str) -> str:
    return posixpath.splitext(name.replace("\\", "/").lower())[1]
