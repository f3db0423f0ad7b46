"""Model formats that are not pickles: recognised by content, read without running anything.

Data-only formats (safetensors, GGUF, ONNX) are validated and said to be no pickle; formats that can run
code when loaded are reviewed against picklewarden's knowledge: Keras configs (Lambda bytecode, callables
by module name), Hydra/OmegaConf and PyYAML configs (``_target_``, python tags), Jinja chat templates,
ONNX external data, executables posing as models, and transformers' ``auto_map`` remote code.
"""

from __future__ import annotations

import os
import posixpath

from picklewarden.containers.base import Context, Data, Opened, PickleSource, Stacking
from picklewarden.containers.sniff import looks_like_pickle

_YAML_NAMES = frozenset({".yaml", ".yml"})
_SCRIPT_NAMES = frozenset({".sh", ".bash", ".zsh", ".py", ".pl", ".rb"})
"""A script named as one is an ordinary repository file; only a script posing as something else is flagged."""
_GGUF = b"GGUF"
_HDF5 = b"\x89HDF\r\n\x1a\n"
_YAML_MARKERS = (b"_target_:", b"!!python/", b"tag:yaml.org,2002:python/")
_JSON_MARKERS = (b'"_target_"', b'"auto_map"', b'"class_name"', b'"chat_template"')
# The checks below run on every file no earlier reader claimed (pickles included), so they are byte tests
# here, and each reader module is imported only for a file it will read.


def _hdf5(head: bytes) -> bool:
    """The superblock signature, at the start or after a 512-byte user block."""
    return head.startswith(_HDF5) or head[512:520] == _HDF5


def _safetensors(head: bytes) -> bool:
    """Eight bytes of header length followed by the start of a JSON object."""
    return len(head) >= 10 and int.from_bytes(head[:8], "little") >= 2 and head[8:9] == b"{"


def _onnx(head: bytes) -> bool:
    """A ModelProto's first bytes: ir_version (field 1, a small varint), then another ModelProto field."""
    if len(head) < 3 or head[0] != 0x08 or not 1 <= head[1] <= 30:
        return False
    return head[2] >> 3 in (2, 3, 4, 5, 6, 7, 8, 14, 20, 25) and head[2] & 7 in (0, 2)


def sniff(head: bytes) -> str | None:
    """The non-pickle format ``head`` starts, for picking model files out of a directory walk: strong magic
    numbers, and configs that name code (scripts and plain text are left out)."""
    from picklewarden.formats import executables

    what = executables.kind(head)
    if what is not None and what != "script":
        return "executable"
    if head.startswith(_GGUF):
        return "gguf"
    if _hdf5(head):
        return "hdf5"
    if _safetensors(head):
        return "safetensors"
    if _onnx(head):
        return "onnx"
    if head.lstrip().startswith(b"{") and any(marker in head for marker in _JSON_MARKERS):
        return "json"
    if any(marker in head for marker in _YAML_MARKERS) and b"\x00" not in head:
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
    from picklewarden.formats import executables

    what = executables.kind(head)
    if what == "script" and _extension(ctx.name) in _SCRIPT_NAMES:
        what = None
    if what is not None:
        opened = executables.open_executable(data, what)
        if what == "llamafile":
            from picklewarden.containers import archives

            inner = archives.open_zip_bundle(data, ctx)
            opened.children.extend(inner.children)
            opened.anomalies.extend(inner.anomalies)
            opened.errors.extend(inner.errors)
        return opened
    if head.startswith(_GGUF):
        from picklewarden.formats import gguf

        return gguf.open_gguf(data)
    if _hdf5(head):
        from picklewarden.formats import hdf5

        return hdf5.open_hdf5(data)
    if _safetensors(head):
        from picklewarden.formats import safetensors

        return safetensors.open_safetensors(data)
    if head[:1] == b"\x08":
        from picklewarden.formats import onnx

        if onnx.looks_like(data, head) or _extension(ctx.name) == ".onnx":
            return onnx.open_onnx(data)  # a broken one named .onnx is reported as malformed
    yaml_name = _extension(ctx.name) in _YAML_NAMES
    if head.lstrip()[:1] == b"{" or yaml_name or any(m in head for m in _YAML_MARKERS):
        return _open_config(data, ctx, yaml_name)
    return None


def _open_config(data: Data, ctx: Context, yaml_name: bool) -> Opened | None:
    from picklewarden.formats import configs

    text = configs.as_text(data)
    if text is None:
        return None
    value = configs.parse_json(text) if text.lstrip().startswith("{") else None
    if isinstance(value, dict):
        on_disk = ctx.depth == 0 and os.path.isfile(ctx.name)
        return configs.open_json(value, ctx.name, os.path.dirname(os.path.abspath(ctx.name)) if on_disk else "")
    opened = configs.open_yaml(text)
    if not yaml_name and not opened.anomalies:
        return None  # text that merely mentions a marker: not a config
    return opened


def _extension(name: str) -> str:
    return posixpath.splitext(name.replace("\\", "/").lower())[1]
