"""The test corpus: hostile and benign pickles / PyTorch files, one table.

Every malicious sample, loaded the way a victim would (``pickle.load`` or ``torch.load(weights_only=False)``),
creates its *canary* file and does nothing else; ``tests/test_corpus_fires.py`` proves that in a subprocess,
so the corpus cannot quietly drift into payloads that no longer run. Benign samples load cleanly and touch
nothing. Sample ids name the technique (and the public advisory where one describes it); families follow
``../shared/THREATS.md``:

    sink:process sink:code sink:file sink:nested          what the payload finally calls
    reach:import reach:dotted reach:py2-names reach:ext reach:launder reach:opcode
                                                          how it gets there without a plain REDUCE of os.system
    diff:memo diff:string-global diff:frame diff:broken-tail diff:multi-pickle
                                                          parser differentials
    container:legacy container:zip container:renamed      where the pickle hides
    benign:*                                              what must not be called malicious

Nothing here imports torch at module import time; samples with ``needs_torch`` import it when built.
"""

from __future__ import annotations

import base64
import io
import marshal
import os
import pickle
import pickletools
import shlex
import struct
import warnings
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.asm import Asm


@dataclass(frozen=True)
class Sample:
    id: str
    """pytest id naming the technique (and the advisory id where one exists)."""
    family: str
    """THREATS.md family, e.g. ``sink:process``, ``reach:dotted``, ``container:legacy``, ``benign:state-dict``."""
    filename: str
    """File name with a realistic extension; unique across the corpus."""
    loader: str
    """``pickle`` (``pickle.load(open(f, 'rb'))``) or ``torch`` (``torch.load(f, weights_only=False)``)."""
    expect: str
    """``malicious`` | ``suspicious`` | ``safe``."""
    make: Callable[[Path], bytes]
    """``make(canary) -> file bytes``; malicious payloads create ``canary`` when loaded."""
    needs_torch: bool = False
    """torch must be installed to build the sample, or to load it at all."""


# -- payload text -------------------------------------------------------------------------------------------
def _sh(canary: Path) -> str:
    """A shell command that creates the canary."""
    return f"touch {shlex.quote(str(canary))}"


def _py(canary: Path) -> str:
    """Python source (statement and expression) that creates the canary."""
    return f"open({str(canary)!r}, 'w').close()"


def _argv(canary: Path) -> list[str]:
    return ["touch", str(canary)]


# -- classic sinks, one helper per protocol style ----------------------------------------------------------
def _classic(proto: int, module: str, name: str, arg: str | list[str]) -> bytes:
    """``module.name(arg)`` written the way ``pickle.dumps`` of that protocol would write it."""
    a = Asm(proto)
    if proto >= 4:
        a.short_binunicode(module).memoize().short_binunicode(name).memoize().stack_global().memoize()
    else:
        a.global_(module, name)
    items = arg if isinstance(arg, list) else [arg]
    if proto == 0:
        a.mark()
        if isinstance(arg, list):
            a.mark()
            for item in items:
                a.unicode(item)
            a.list_()
        else:
            a.unicode(arg)
        a.tuple_()
    else:
        if isinstance(arg, list):
            a.empty_list().mark()
            for item in items:
                a.text(item)
            a.appends()
        else:
            a.text(arg)
        a.tuple1()
    return a.reduce().stop().bytes()


def _classic_sample(
    proto: int, module: str, name: str, kind: str, family: str, filename: str, sid: str | None = None
) -> Sample:
    def make(canary: Path) -> bytes:
        arg: str | list[str] = {"sh": _sh(canary), "py": _py(canary)}.get(kind) or _argv(canary)
        return _classic(proto, module, name, arg)

    return Sample(sid or f"p{proto}-{module}-{name}", family, filename, "pickle", "malicious", make)


# -- sinks beyond the classics -----------------------------------------------------------------------------
def _exec_bytes_source(c: Path) -> bytes:
    return Asm(3).global_("builtins", "exec").binbytes(_py(c).encode()).tuple1().reduce().stop().bytes()


def _exec_base64(c: Path) -> bytes:
    encoded = base64.b64encode(_py(c).encode()).decode()
    return (
        Asm(2)
        .global_("builtins", "exec")
        .global_("base64", "b64decode")
        .text(encoded)
        .tuple1()
        .reduce()
        .tuple1()
        .reduce()
        .stop()
        .bytes()
    )


def _exec_marshal(c: Path) -> bytes:
    code = marshal.dumps(compile(_py(c), "<weights>", "exec"))
    return (
        Asm(3)
        .global_("builtins", "exec")
        .global_("marshal", "loads")
        .binbytes(code)
        .tuple1()
        .reduce()
        .tuple1()
        .reduce()
        .stop()
        .bytes()
    )


def _function_type_marshal(c: Path) -> bytes:
    code = marshal.dumps(compile(_py(c), "<weights>", "exec"))
    return (
        Asm(3)
        .global_("types", "FunctionType")
        .global_("marshal", "loads")
        .binbytes(code)
        .tuple1()
        .reduce()
        .empty_dict()
        .tuple2()
        .reduce()  # FunctionType(code, {})
        .empty_tuple()
        .reduce()  # ...()
        .stop()
        .bytes()
    )


def _runpy_run_code(c: Path) -> bytes:
    return Asm(2).global_("runpy", "_run_code").text(_py(c)).empty_dict().tuple2().reduce().stop().bytes()


def _timeit_setup(c: Path) -> bytes:
    # timeit.timeit(stmt="pass", setup=<code>): setup runs once, the 10**6 "pass" loops take milliseconds.
    return Asm(2).global_("timeit", "timeit").text("pass").text(_py(c)).tuple2().reduce().stop().bytes()


def _numpy_runstring(c: Path) -> bytes:
    return (
        Asm(2)
        .global_("numpy.testing._private.utils", "runstring")
        .text(_py(c))
        .empty_dict()
        .tuple2()
        .reduce()
        .stop()
        .bytes()
    )


def _builtins_open(c: Path) -> bytes:
    return Asm(2).global_("builtins", "open").text(str(c)).text("w").tuple2().reduce().stop().bytes()


def _logging_file_handler(c: Path) -> bytes:
    return Asm(2).global_("logging", "FileHandler").text(str(c)).tuple1().reduce().stop().bytes()


def _unix_socket_server(proto: int) -> Callable[[Path], bytes]:
    """socketserver binds (and listens on) a Unix socket at the canary path as it is constructed."""

    def make(c: Path) -> bytes:
        asm = Asm(proto).global_("socketserver", "UnixStreamServer").text(str(c))
        return asm.global_("socketserver", "BaseRequestHandler").tuple2().reduce().stop().bytes()

    return make


def _uuid_command_stdout(c: Path) -> bytes:
    return Asm(2).global_("uuid", "_get_command_stdout").text("touch").text(str(c)).tuple2().reduce().stop().bytes()


def _osx_support_read_output(c: Path) -> bytes:
    return Asm(2).global_("_osx_support", "_read_output").text(_sh(c)).tuple1().reduce().stop().bytes()


def _imaplib_stream(c: Path) -> bytes:
    # IMAP4_stream.__init__ runs the command with shell=True, then fails reading a greeting: too late.
    return Asm(2).global_("imaplib", "IMAP4_stream").text(_sh(c)).tuple1().reduce().stop().bytes()


def _inner(c: Path) -> bytes:
    return Asm(2).global_("posix", "system").text(_sh(c)).tuple1().reduce().stop().bytes()


def _nested_pickle(c: Path) -> bytes:
    return Asm(3).global_("pickle", "loads").binbytes(_inner(c)).tuple1().reduce().stop().bytes()


def _nested_pickle_zlib(c: Path) -> bytes:
    return (
        Asm(3)
        .global_("_pickle", "loads")
        .global_("zlib", "decompress")
        .binbytes(zlib.compress(_inner(c)))
        .tuple1()
        .reduce()
        .tuple1()
        .reduce()
        .stop()
        .bytes()
    )


# -- reaching the sink without naming it -------------------------------------------------------------------
def _import_module_getattr(c: Path) -> bytes:
    return (
        Asm(2)
        .global_("builtins", "getattr")
        .global_("importlib", "import_module")
        .text("os")
        .tuple1()
        .reduce()
        .text("system")
        .tuple2()
        .reduce()  # getattr(import_module("os"), "system")
        .text(_sh(c))
        .tuple1()
        .reduce()
        .stop()
        .bytes()
    )


def _dunder_import_getattr(c: Path) -> bytes:
    return (
        Asm(2)
        .global_("builtins", "getattr")
        .global_("builtins", "__import__")
        .text("subprocess")
        .tuple1()
        .reduce()
        .text("call")
        .tuple2()
        .reduce()
        .empty_list()
        .text("touch")
        .append()
        .text(str(c))
        .append()
        .tuple1()
        .reduce()
        .stop()
        .bytes()
    )


def _pkgutil_resolve_name(c: Path) -> bytes:
    return (
        Asm(2)
        .global_("pkgutil", "resolve_name")
        .text("os:system")
        .tuple1()
        .reduce()
        .text(_sh(c))
        .tuple1()
        .reduce()
        .stop()
        .bytes()
    )


def _pydoc_locate(c: Path) -> bytes:
    return (
        Asm(2)
        .global_("pydoc", "locate")
        .text("subprocess.check_call")
        .tuple1()
        .reduce()
        .empty_list()
        .text("touch")
        .append()
        .text(str(c))
        .append()
        .tuple1()
        .reduce()
        .stop()
        .bytes()
    )


def _ext(width: int, code: int) -> Callable[[Path], bytes]:
    """Register ``posix.system`` as extension ``code`` via copyreg, then fetch it with EXT1/2/4."""

    def make(c: Path) -> bytes:
        a = Asm(2).global_("copyreg", "add_extension").text("posix").text("system").binint(code).tuple3()
        a.reduce().pop()
        {1: a.ext1, 2: a.ext2, 4: a.ext4}[width](code)
        return a.text(_sh(c)).tuple1().reduce().stop().bytes()

    return make


def _dotted(module: str, name: str, kind: str = "sh", *, text_global: bool = False) -> Callable[[Path], bytes]:
    """Protocol 4: ``module`` + dotted attribute path resolved by the unpickler's _getattribute."""

    def make(c: Path) -> bytes:
        a = Asm(4)
        if text_global:
            a.global_(module, name)
        else:
            a.short_binunicode(module).short_binunicode(name).stack_global()
        if kind == "argv":
            a.empty_list().mark().text("touch").text(str(c)).appends()
        else:
            a.text(_sh(c))
        return a.tuple1().reduce().stop().bytes()

    return make


def _py2_builtin_eval(c: Path) -> bytes:
    return Asm(2).global_("__builtin__", "eval").binunicode(_py(c)).tuple1().reduce().stop().bytes()


def _py2_commands_getoutput(c: Path) -> bytes:
    return Asm(2).global_("commands", "getoutput").binunicode(_sh(c)).tuple1().reduce().stop().bytes()


def _py2_itertools_imap(c: Path) -> bytes:
    # itertools.imap is remapped to builtins.map; tuple() drains it, calling os.system.
    return (
        Asm(2)
        .global_("__builtin__", "tuple")
        .global_("itertools", "imap")
        .global_("os", "system")
        .empty_list()
        .text(_sh(c))
        .append()
        .tuple2()
        .reduce()
        .tuple1()
        .reduce()
        .stop()
        .bytes()
    )


def _operator_methodcaller(c: Path) -> bytes:
    return (
        Asm(2)
        .global_("operator", "methodcaller")
        .text("system")
        .text(_sh(c))
        .tuple2()
        .reduce()
        .global_("importlib", "import_module")
        .text("os")
        .tuple1()
        .reduce()
        .tuple1()
        .reduce()
        .stop()
        .bytes()  # methodcaller("system", cmd)(os)
    )


def _functools_partial(c: Path) -> bytes:
    return (
        Asm(2)
        .global_("functools", "partial")
        .global_("posix", "system")
        .text(_sh(c))
        .tuple2()
        .reduce()
        .empty_tuple()
        .reduce()
        .stop()
        .bytes()
    )


def _atexit_register(c: Path) -> bytes:
    # Nothing runs during load; os.system fires when the victim's interpreter exits.
    return (
        Asm(2)
        .global_("atexit", "register")
        .global_("posix", "system")
        .text(_sh(c))
        .tuple2()
        .reduce()
        .pop()
        .empty_dict()
        .stop()
        .bytes()
    )


def _functools_reduce_exec(c: Path) -> bytes:
    # reduce(exec, [{}], code) calls exec(code, {}) right away: a helper judged by what it calls.
    return (
        Asm(2)
        .global_("functools", "reduce")
        .global_("builtins", "exec")
        .empty_list()
        .empty_dict()
        .append()
        .text(_py(c))
        .tuple3()
        .reduce()
        .stop()
        .bytes()
    )


def _getattr_literal(module: str, name: str, attr: str, args: Callable[[Asm, Path], Asm]) -> Callable[[Path], bytes]:
    """getattr(<global>, '<attr>')(*args): the way Python pickles torch.tanh, aimed at a sink."""

    def make(c: Path) -> bytes:
        asm = Asm(2).global_("builtins", "getattr").global_(module, name).text(attr).tuple2().reduce()
        return args(asm.mark(), c).tuple_().reduce().stop().bytes()

    return make


def _load_from_bytes_unseen(c: Path) -> bytes:
    # The inner torch file is spelled as bytes(list of ints): the loader sees it, a static scan does not.
    inner = _torch_save(_Detonator(_sh(c)), legacy=True)
    asm = Asm(2).global_("torch.storage", "_load_from_bytes").global_("builtins", "bytes").empty_list().mark()
    for byte in inner:
        asm.binint1(byte)
    return asm.appends().tuple1().reduce().tuple1().reduce().stop().bytes()


# -- calling opcodes other than REDUCE ---------------------------------------------------------------------
def _inst(c: Path) -> bytes:
    return Asm(0).mark().string(_sh(c)).inst("os", "system").stop().bytes()


def _obj(c: Path) -> bytes:
    return Asm(1).mark().global_("builtins", "exec").binunicode(_py(c)).obj().stop().bytes()


def _newobj_tuple_map(c: Path) -> bytes:
    # NEWOBJ calls cls.__new__ only, so pick types whose __new__ does the work: map.__new__ binds
    # (func, iterable) and tuple.__new__ drains it. No REDUCE anywhere.
    return (
        Asm(2)
        .global_("builtins", "tuple")
        .global_("builtins", "map")
        .global_("posix", "system")
        .empty_list()
        .text(_sh(c))
        .append()
        .tuple2()
        .newobj()  # map.__new__(map, posix.system, [cmd])
        .tuple1()
        .newobj()  # tuple.__new__(tuple, <map>)  -> calls posix.system(cmd)
        .stop()
        .bytes()
    )


def _newobj_ex_frozenset_map(c: Path) -> bytes:
    return (
        Asm(4)
        .short_binunicode("builtins")
        .short_binunicode("frozenset")
        .stack_global()
        .short_binunicode("builtins")
        .short_binunicode("map")
        .stack_global()
        .short_binunicode("builtins")
        .short_binunicode("exec")
        .stack_global()
        .empty_list()
        .text(_py(c))
        .append()
        .tuple2()
        .empty_dict()
        .newobj_ex()
        .tuple1()
        .empty_dict()
        .newobj_ex()
        .stop()
        .bytes()
    )


def _build_setstate_injection(c: Path) -> bytes:
    # argparse.Namespace has a __dict__ and no __setstate__: the first BUILD stores exec as the instance's
    # "__setstate__", the second BUILD then calls it with the code string.
    return (
        Asm(2)
        .global_("argparse", "Namespace")
        .empty_tuple()
        .newobj()
        .empty_dict()
        .text("__setstate__")
        .global_("builtins", "exec")
        .setitem()
        .build()
        .text(_py(c))
        .build()
        .stop()
        .bytes()
    )


def _call_result_popped(c: Path) -> bytes:
    return (
        Asm(2)
        .empty_dict()
        .binput(0)
        .global_("posix", "system")
        .text(_sh(c))
        .tuple1()
        .reduce()
        .pop()
        .text("epoch")
        .binint1(3)
        .setitem()
        .stop()
        .bytes()
    )


# -- memo games --------------------------------------------------------------------------------------------
def _memo_binget_callable(c: Path) -> bytes:
    return (
        Asm(2)
        .global_("posix", "system")
        .binput(1)
        .pop()
        .empty_dict()
        .binput(2)
        .pop()
        .binget(1)
        .text(_sh(c))
        .tuple1()
        .reduce()
        .stop()
        .bytes()
    )


def _memo_long_binget_callable(c: Path) -> bytes:
    return (
        Asm(2)
        .global_("builtins", "eval")
        .long_binput(70000)
        .pop()
        .long_binget(70000)
        .binunicode(_py(c))
        .tuple1()
        .reduce()
        .stop()
        .bytes()
    )


def _memo_text_get_callable(c: Path) -> bytes:
    return (
        Asm(0).global_("builtins", "exec").put(7).pop().get(7).mark().unicode(_py(c)).tuple_().reduce().stop().bytes()
    )


def _memo_names_stack_global(c: Path) -> bytes:
    # The module and attribute *names* are memoized early and fetched for STACK_GLOBAL much later.
    return (
        Asm(4)
        .short_binunicode("subprocess")
        .memoize()
        .pop()
        .short_binunicode("check_call")
        .memoize()
        .pop()
        .empty_dict()
        .memoize()
        .pop()
        .binget(0)
        .binget(1)
        .stack_global()
        .empty_list()
        .mark()
        .text("touch")
        .text(str(c))
        .appends()
        .tuple1()
        .reduce()
        .stop()
        .bytes()
    )


# -- STACK_GLOBAL fed by older string opcodes --------------------------------------------------------------
def _sg_string(c: Path) -> bytes:
    return Asm(0).string("os").string("system").stack_global().mark().string(_sh(c)).tuple_().reduce().stop().bytes()


def _sg_unicode(c: Path) -> bytes:
    return (
        Asm(0)
        .unicode("builtins")
        .unicode("exec")
        .stack_global()
        .mark()
        .unicode(_py(c))
        .tuple_()
        .reduce()
        .stop()
        .bytes()
    )


def _sg_binstring(c: Path) -> bytes:
    return (
        Asm(1)
        .binstring("posix")
        .short_binstring("system")
        .stack_global()
        .mark()
        .binstring(_sh(c))
        .tuple_()
        .reduce()
        .stop()
        .bytes()
    )


def _sg_binunicode8(c: Path) -> bytes:
    return (
        Asm(4)
        .binunicode8("builtins")
        .binunicode("eval")
        .stack_global()
        .binunicode8(_py(c))
        .tuple1()
        .reduce()
        .stop()
        .bytes()
    )


# -- FRAME: the declared frame ends in the middle of an argument ---------------------------------------------
def _frame_spill(c: Path) -> bytes:
    # FRAME(7) covers  8c 02 "os" 8c 06 "s" : the "system" string spills past the frame. The C unpickler
    # ignores frame boundaries and runs it; pure-Python pickle raises "pickle exhausted before end of frame".
    return (
        Asm(4, framed=False)
        .frame(7)
        .short_binunicode("os")
        .short_binunicode("system")
        .stack_global()
        .text(_sh(c))
        .tuple1()
        .reduce()
        .stop()
        .bytes()
    )


# -- payload, then a broken tail ---------------------------------------------------------------------------
def _payload_no_stop(c: Path) -> Asm:
    return Asm(2).global_("posix", "system").text(_sh(c)).tuple1().reduce()


def _tail_invalid_opcode(c: Path) -> bytes:
    return _payload_no_stop(c).raw(b"\xff\xfe\xfd").bytes()


def _tail_truncated_argument(c: Path) -> bytes:
    return _payload_no_stop(c).raw(b"X" + struct.pack("<I", 4096) + b"abc").bytes()


def _tail_eof_without_stop(c: Path) -> bytes:
    return _payload_no_stop(c).bytes()


def _tail_stack_underflow(c: Path) -> bytes:
    return _payload_no_stop(c).setitem().stop().bytes()


def _tail_garbage_after_stop(c: Path) -> bytes:
    return _payload_no_stop(c).stop().raw(b"\x00garbage\xff" * 8).bytes()


def _multi_pickle_first(c: Path) -> bytes:
    benign = pickle.dumps({"epoch": 3, "lr": 0.1}, protocol=2)
    return _payload_no_stop(c).stop().bytes() + benign + pickle.dumps([1, 2, 3], protocol=4)


# -- torch containers --------------------------------------------------------------------------------------
class _Detonator:
    """What an attacker's torch.save() of a hostile object writes: ``posix.system(command)`` on load."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (self.command,))


def _torch_save(obj: object, *, legacy: bool = False) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf, _use_new_zipfile_serialization=not legacy)
    return buf.getvalue()


def _sequential() -> Any:
    import torch
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, kernel_size=3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 2)
    )


def _poisoned_state_dict(c: Path) -> Any:
    sd = _sequential().state_dict()
    sd["4.bias_init"] = _Detonator(_sh(c))
    return sd


class _RebuildWithSink:
    """A tensor whose rebuild call (``torch._utils._rebuild_tensor_v2``, known safe) also takes a sink's result
    as its ``metadata`` argument: the sink runs while the unpickler builds the arguments, before the safe
    function is called (it then gets 0, which it ignores). A scanner that skips safe reconstructor calls
    without looking at their arguments misses it."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[Any, ...]:
        import collections

        import torch

        storage = torch.zeros(2)._typed_storage()
        args = (storage, 0, (2,), (1,), False, collections.OrderedDict(), _Detonator(self.command))
        return (torch._utils._rebuild_tensor_v2, args)


def _torch_zip_sink_in_rebuild_args(c: Path) -> bytes:
    sd = _sequential().state_dict()
    sd["4.scale"] = _RebuildWithSink(_sh(c))
    return _torch_save(sd)


def _zip_entries(data: bytes | bytearray) -> list[tuple[str, int, int]]:
    """(name, central-directory header offset, local header offset) of every entry."""
    eocd = data.rfind(b"PK\x05\x06")
    (cd_offset,) = struct.unpack_from("<I", data, eocd + 16)
    entries, pos = [], cd_offset
    while data[pos : pos + 4] == b"PK\x01\x02":
        name_len, extra_len, comment_len = struct.unpack_from("<HHH", data, pos + 28)
        (local,) = struct.unpack_from("<I", data, pos + 42)
        entries.append((bytes(data[pos + 46 : pos + 46 + name_len]).decode(), pos, local))
        pos += 46 + name_len + extra_len + comment_len
    return entries


def _patch_data_pkl(data: bytes, patch: Callable[[bytearray, int, int], None]) -> bytes:
    out = bytearray(data)
    hits = [(central, local) for name, central, local in _zip_entries(out) if name.endswith("/data.pkl")]
    assert hits, "no data.pkl in archive"
    for central, local in hits:
        patch(out, central, local)
    return bytes(out)


def _zip_of(entries: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        warnings.simplefilter("ignore")  # duplicate names are the point of one sample
        for name, payload in entries:
            z.writestr(name, payload)
    return buf.getvalue()


def _zip_members(data: bytes) -> list[tuple[str, bytes]]:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return [(info.filename, z.read(info)) for info in z.infolist()]


def _torch_zip_poisoned(c: Path) -> bytes:
    return _torch_save(_poisoned_state_dict(c))


def _torch_zip_bad_crc(c: Path) -> bytes:
    def patch(b: bytearray, central: int, local: int) -> None:
        b[central + 16] ^= 0xFF  # CRC-32 in the central directory ...
        b[local + 14] ^= 0xFF  # ... and in the local header: both now disagree with the data

    return _patch_data_pkl(_torch_zip_poisoned(c), patch)


def _torch_zip_local_name(c: Path) -> bytes:
    def patch(b: bytearray, central: int, local: int) -> None:
        (name_len,) = struct.unpack_from("<H", b, local + 26)
        b[local + 30 + name_len - 3 : local + 30 + name_len] = b"txt"  # local header says ".../data.txt"

    return _patch_data_pkl(_torch_zip_poisoned(c), patch)


def _torch_zip_local_encrypted_flag(c: Path) -> bytes:
    def patch(b: bytearray, central: int, local: int) -> None:
        b[local + 6] |= 0x01  # "encrypted" in the local header only (torch rejects it in the central one)

    return _patch_data_pkl(_torch_zip_poisoned(c), patch)


def _torch_zip_duplicate(c: Path) -> bytes:
    # A benign data.pkl first, the poisoned one last: torch (like zipfile.read) uses the last entry.
    benign = dict(_zip_members(_torch_save(_sequential().state_dict())))
    members = _zip_members(_torch_zip_poisoned(c))
    prefix = members[0][0].rsplit("/", 1)[0]
    first = [(f"{prefix}/data.pkl", benign[f"{prefix}/data.pkl"])]
    return _zip_of(
        first
        + [m for m in members if not m[0].endswith("/data.pkl")]
        + [m for m in members if m[0].endswith("/data.pkl")]
    )


def _torch_zip_odd_prefix(c: Path) -> bytes:
    members = _zip_members(_torch_zip_poisoned(c))
    return _zip_of([("resnet50_final_v2/" + name.split("/", 1)[1], data) for name, data in members])


def _torch_zip_handmade_data_pkl(c: Path) -> bytes:
    # data.pkl replaced by a hand-written protocol-0 pickle: exec through STACK_GLOBAL, then returns {}.
    payload = (
        Asm(0)
        .unicode("builtins")
        .unicode("exec")
        .stack_global()
        .mark()
        .unicode(_py(c))
        .tuple_()
        .reduce()
        .pop()
        .empty_dict()
        .stop()
        .bytes()
    )
    members = _zip_members(_torch_save(_sequential().state_dict()))
    return _zip_of([(name, payload if name.endswith("/data.pkl") else data) for name, data in members])


def _torch_zip_pickle_prepended(c: Path) -> bytes:
    # Bytes before "PK\x03\x04" make torch take the legacy path, whose first pickle.load runs the payload;
    # zipfile still opens the (benign) archive behind it.
    return _inner(c) + _torch_save(_sequential().state_dict())


def _legacy_bounds(data: bytes) -> list[tuple[int, int]]:
    """Start/end offsets of the five pickles at the head of a legacy torch file."""
    f, bounds = io.BytesIO(data), []
    for _ in range(5):
        start = f.tell()
        for _op in pickletools.genops(f):
            pass
        bounds.append((start, f.tell()))
    return bounds


def _legacy_poisoned(c: Path) -> bytes:
    return _torch_save(_poisoned_state_dict(c), legacy=True)


def _legacy_magic_position(c: Path) -> bytes:
    import torch

    data = _torch_save(_sequential().state_dict(), legacy=True)
    first_end = _legacy_bounds(data)[0][1]
    # Runs the payload, then returns the real magic number so the load carries on as if nothing happened.
    head = _payload_no_stop(c).pop().long1(torch.serialization.MAGIC_NUMBER).stop().bytes()
    return head + data[first_end:]


def _legacy_sys_info_position(c: Path) -> bytes:
    data = _torch_save(_sequential().state_dict(), legacy=True)
    bounds = _legacy_bounds(data)
    sys_info = pickle.loads(data[bounds[2][0] : bounds[2][1]])
    payload = _payload_no_stop(c).pop().bytes() + pickle.dumps(sys_info, protocol=2)[2:]
    return data[: bounds[2][0]] + payload + data[bounds[2][1] :]


# -- benign ------------------------------------------------------------------------------------------------
def _benign_state_dict(_c: Path) -> bytes:
    return _torch_save(_sequential().state_dict())


def _benign_training_checkpoint(_c: Path) -> bytes:
    import argparse
    import datetime
    import pathlib

    import numpy
    import torch

    model = _sequential()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 3, 8, 8)).sum().backward()
    opt.step()
    return _torch_save(
        {
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "epoch": 3,
            "args": argparse.Namespace(lr=0.1, arch="tiny"),
            "np": numpy.float64(1.5),
            "when": datetime.datetime(2025, 1, 2, 3, 4, 5),
            "path": pathlib.PosixPath("/x"),
        }
    )


def _benign_tensor_zoo(_c: Path) -> bytes:
    import collections

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # quantized dtypes are deprecated, but old checkpoints hold them
        quantized = torch.quantize_per_tensor(torch.linspace(0, 1, 4), 0.1, 0, torch.quint8)
    return _torch_save(
        {
            "size": torch.Size([2, 3]),
            "device": torch.device("cpu"),
            "dtype": torch.float16,
            "bf16": torch.ones(2, dtype=torch.bfloat16),
            "sparse": torch.eye(3).to_sparse(),
            "quantized": quantized,
            "ordered": collections.OrderedDict(w=torch.zeros(1)),
            "counts": collections.defaultdict(list, {"k": [1, 2]}),
        }
    )


def _benign_full_sequential(_c: Path) -> bytes:
    return _torch_save(_sequential())


def _benign_full_custom(_c: Path) -> bytes:
    from tests._benign_models import TinyNet

    return _torch_save(TinyNet())


def _benign_legacy_state_dict(_c: Path) -> bytes:
    return _torch_save(_sequential().state_dict(), legacy=True)


def _benign_plain(proto: int) -> Callable[[Path], bytes]:
    def make(_c: Path) -> bytes:
        shared = [1.5, "x"]
        obj = {
            "name": "resnet",
            "layers": [1, 2, 3],
            "shared": (shared, shared),
            "ok": True,
            "none": None,
            "big": 2**80,
            "neg": -7,
            "blob": b"\x00\x01",
            "tags": {"a", "b"},
            "frozen": frozenset({1}),
            "ba": bytearray(b"ba"),
            "c": 1 + 2j,
            "nested": {"k": [{"v": 1.0}]},
        }
        return pickle.dumps(obj, protocol=proto)

    return make


def _benign_numpy(proto: int) -> Callable[[Path], bytes]:
    def make(_c: Path) -> bytes:
        import numpy

        return pickle.dumps(
            {"w": numpy.arange(12, dtype=numpy.float32).reshape(3, 4), "i": numpy.int64(7), "dt": numpy.dtype("<u2")},
            protocol=proto,
        )

    return make


def _benign_stdlib_values(_c: Path) -> bytes:
    import collections
    import datetime
    import decimal

    return pickle.dumps(
        {
            "when": datetime.datetime(2024, 5, 6, 7, 8, 9, tzinfo=datetime.timezone.utc),
            "day": datetime.date(2024, 5, 6),
            "dt": datetime.timedelta(seconds=3),
            "price": decimal.Decimal("1.25"),
            "ordered": collections.OrderedDict(a=1),
            "counts": collections.Counter("abca"),
            "r": range(3),
        },
        protocol=2,
    )


def _benign_custom_class(_c: Path) -> bytes:
    from tests._benign_models import StandardScaler

    return pickle.dumps(StandardScaler([0.0, 1.0], [1.0, 2.0]), protocol=4)


# -- the table ---------------------------------------------------------------------------------------------
_M, _S, _OK = "malicious", "suspicious", "safe"

_CLASSIC: list[Sample] = [
    # os.system / posix.system, exec, eval and subprocess in protocols 0, 2, 4 and 5.
    _classic_sample(0, "os", "system", "sh", "sink:process", "p0_os_system.pkl"),
    _classic_sample(2, "posix", "system", "sh", "sink:process", "p2_posix_system.pkl"),
    _classic_sample(4, "os", "system", "sh", "sink:process", "p4_os_system.pkl"),
    _classic_sample(5, "posix", "system", "sh", "sink:process", "p5_posix_system.pkl"),
    _classic_sample(0, "builtins", "exec", "py", "sink:code", "p0_exec.pkl"),
    _classic_sample(2, "builtins", "exec", "py", "sink:code", "p2_exec.pkl"),
    _classic_sample(4, "builtins", "exec", "py", "sink:code", "p4_exec.pkl"),
    _classic_sample(5, "builtins", "exec", "py", "sink:code", "p5_exec.pkl"),
    _classic_sample(0, "builtins", "eval", "py", "sink:code", "p0_eval.pkl"),
    _classic_sample(2, "builtins", "eval", "py", "sink:code", "p2_eval.pkl"),
    _classic_sample(4, "builtins", "eval", "py", "sink:code", "p4_eval.pkl"),
    _classic_sample(5, "builtins", "eval", "py", "sink:code", "p5_eval.pkl"),
    _classic_sample(0, "subprocess", "call", "argv", "sink:process", "p0_subprocess_call.pkl"),
    _classic_sample(2, "subprocess", "check_call", "argv", "sink:process", "p2_subprocess_check_call.pkl"),
    _classic_sample(4, "subprocess", "Popen", "argv", "sink:process", "p4_subprocess_popen.pkl"),
    _classic_sample(5, "subprocess", "run", "argv", "sink:process", "p5_subprocess_run.pkl"),
    _classic_sample(2, "os", "popen", "sh", "sink:process", "p2_os_popen.pkl"),
    _classic_sample(2, "subprocess", "getoutput", "sh", "sink:process", "p2_subprocess_getoutput.pkl"),
]

MALICIOUS: list[Sample] = [
    *_CLASSIC,
    # -- less famous sinks
    Sample("uuid-get-command-stdout", "sink:process", "uuid_helper.pkl", "pickle", _M, _uuid_command_stdout),
    Sample("osx-support-read-output", "sink:process", "osx_support.pkl", "pickle", _M, _osx_support_read_output),
    Sample("imaplib-IMAP4-stream-shell", "sink:process", "imap_stream.pkl", "pickle", _M, _imaplib_stream),
    Sample("exec-bytes-source-p3", "sink:code", "exec_bytes_p3.pkl", "pickle", _M, _exec_bytes_source),
    Sample("exec-base64-decoded", "sink:code", "exec_b64.pkl", "pickle", _M, _exec_base64),
    Sample("exec-marshal-code-object", "sink:code", "exec_marshal.pkl", "pickle", _M, _exec_marshal),
    Sample("types-FunctionType-marshal-code", "sink:code", "functiontype.pkl", "pickle", _M, _function_type_marshal),
    Sample("runpy-_run_code-string", "sink:code", "runpy_run_code.pkl", "pickle", _M, _runpy_run_code),
    Sample("timeit-setup-string", "sink:code", "timeit_setup.pkl", "pickle", _M, _timeit_setup),
    Sample("numpy-private-runstring-exec", "sink:code", "numpy_runstring.pkl", "pickle", _M, _numpy_runstring),
    Sample("builtins-open-write", "sink:file", "open_write.pkl", "pickle", _M, _builtins_open),
    Sample("logging-FileHandler", "sink:file", "filehandler.pkl", "pickle", _M, _logging_file_handler),
    Sample(
        "socketserver-UnixStreamServer-p0", "sink:network", "unix_server_p0.pkl", "pickle", _M, _unix_socket_server(0)
    ),
    Sample(
        "socketserver-UnixStreamServer-p2", "sink:network", "unix_server_p2.pkl", "pickle", _M, _unix_socket_server(2)
    ),
    Sample("nested-pickle-loads", "sink:nested", "nested.pkl", "pickle", _M, _nested_pickle),
    Sample("nested-_pickle-loads-zlib", "sink:nested", "nested_zlib.pkl", "pickle", _M, _nested_pickle_zlib),
    # -- reaching a sink without naming it
    Sample(
        "importlib-import_module-getattr", "reach:import", "import_module.pkl", "pickle", _M, _import_module_getattr
    ),
    Sample("builtins-__import__-getattr", "reach:import", "dunder_import.pkl", "pickle", _M, _dunder_import_getattr),
    Sample("pkgutil-resolve_name", "reach:import", "resolve_name.pkl", "pickle", _M, _pkgutil_resolve_name),
    Sample("pydoc-locate", "reach:import", "pydoc_locate.pkl", "pickle", _M, _pydoc_locate),
    Sample("copyreg-add_extension-EXT1", "reach:ext", "ext1.pkl", "pickle", _M, _ext(1, 0xF1)),
    Sample("copyreg-add_extension-EXT2", "reach:ext", "ext2.pkl", "pickle", _M, _ext(2, 0x1234)),
    Sample("copyreg-add_extension-EXT4", "reach:ext", "ext4.pkl", "pickle", _M, _ext(4, 0x7FFF1234)),
    Sample(
        "dotted-shutil-os.system", "reach:dotted", "dotted_shutil.pkl", "pickle", _M, _dotted("shutil", "os.system")
    ),
    Sample(
        "dotted-torch-serialization.os.system",
        "reach:dotted",
        "dotted_torch.pkl",
        "pickle",
        _M,
        _dotted("torch", "serialization.os.system"),
        needs_torch=True,
    ),
    Sample(
        "dotted-text-GLOBAL-tempfile-_os.system",
        "reach:dotted",
        "dotted_tempfile.pkl",
        "pickle",
        _M,
        _dotted("tempfile", "_os.system", text_global=True),
    ),
    Sample(
        "dotted-asyncio.unix_events-subprocess.call",
        "reach:dotted",
        "dotted_asyncio.pkl",
        "pickle",
        _M,
        _dotted("asyncio.unix_events", "subprocess.call", "argv"),
    ),
    Sample("py2-__builtin__-eval", "reach:py2-names", "py2_builtin_eval.pkl", "pickle", _M, _py2_builtin_eval),
    Sample("py2-commands-getoutput", "reach:py2-names", "py2_commands.pkl", "pickle", _M, _py2_commands_getoutput),
    Sample("py2-itertools-imap-drained-by-tuple", "reach:py2-names", "py2_imap.pkl", "pickle", _M, _py2_itertools_imap),
    Sample("operator-methodcaller", "reach:launder", "methodcaller.pkl", "pickle", _M, _operator_methodcaller),
    Sample("functools-partial", "reach:launder", "partial.pkl", "pickle", _M, _functools_partial),
    Sample("atexit-register-deferred", "reach:launder", "atexit.pkl", "pickle", _M, _atexit_register),
    Sample("functools-reduce-exec", "reach:launder", "reduce_exec.pkl", "pickle", _M, _functools_reduce_exec),
    Sample(
        "getattr-literal-PosixPath-touch",
        "sink:file",
        "getattr_touch.pkl",
        "pickle",
        _M,
        _getattr_literal(
            "pathlib",
            "PosixPath",
            "touch",
            lambda a, c: a.global_("pathlib", "PosixPath").text(str(c)).tuple1().reduce(),
        ),
    ),
    Sample(
        "getattr-literal-torch._C-from_file",
        "sink:file",
        "getattr_from_file.pt",
        "pickle",
        _M,
        _getattr_literal(
            "torch._C", "_VariableFunctionsClass", "from_file", lambda a, c: a.text(str(c)).newtrue().binint1(4)
        ),
        needs_torch=True,
    ),
    Sample(
        "torch-_load_from_bytes-unseen-bytes",
        "sink:nested",
        "unseen_storage.pkl",
        "pickle",
        _M,
        _load_from_bytes_unseen,
        needs_torch=True,
    ),
    Sample("INST-os-system", "reach:opcode", "inst.pkl", "pickle", _M, _inst),
    Sample("OBJ-builtins-exec", "reach:opcode", "obj.pkl", "pickle", _M, _obj),
    Sample("NEWOBJ-tuple-of-map-no-REDUCE", "reach:opcode", "newobj.pkl", "pickle", _M, _newobj_tuple_map),
    Sample("NEWOBJ_EX-frozenset-of-map", "reach:opcode", "newobj_ex.pkl", "pickle", _M, _newobj_ex_frozenset_map),
    Sample(
        "BUILD-setstate-injection-Namespace",
        "reach:opcode",
        "build_setstate.pkl",
        "pickle",
        _M,
        _build_setstate_injection,
    ),
    Sample("call-result-POPped", "reach:opcode", "popped_call.pkl", "pickle", _M, _call_result_popped),
    # -- parser differentials
    Sample("memo-BINPUT-BINGET-callable", "diff:memo", "memo_binget.pkl", "pickle", _M, _memo_binget_callable),
    Sample("memo-LONG_BINGET-callable", "diff:memo", "memo_long_binget.pkl", "pickle", _M, _memo_long_binget_callable),
    Sample("memo-text-PUT-GET-callable", "diff:memo", "memo_text_get.pkl", "pickle", _M, _memo_text_get_callable),
    Sample("memo-MEMOIZE-names-to-STACK_GLOBAL", "diff:memo", "memo_names.pkl", "pickle", _M, _memo_names_stack_global),
    Sample("STACK_GLOBAL-from-STRING", "diff:string-global", "sg_string.pkl", "pickle", _M, _sg_string),
    Sample("STACK_GLOBAL-from-UNICODE", "diff:string-global", "sg_unicode.pkl", "pickle", _M, _sg_unicode),
    Sample("STACK_GLOBAL-from-BINSTRING", "diff:string-global", "sg_binstring.pkl", "pickle", _M, _sg_binstring),
    Sample("STACK_GLOBAL-from-BINUNICODE8", "diff:string-global", "sg_binunicode8.pkl", "pickle", _M, _sg_binunicode8),
    Sample("FRAME-argument-spills-past-frame", "diff:frame", "frame_spill.pkl", "pickle", _M, _frame_spill),
    Sample("broken-tail-invalid-opcode", "diff:broken-tail", "tail_invalid.pkl", "pickle", _M, _tail_invalid_opcode),
    Sample(
        "broken-tail-truncated-argument",
        "diff:broken-tail",
        "tail_truncated.pkl",
        "pickle",
        _M,
        _tail_truncated_argument,
    ),
    Sample("broken-tail-eof-without-STOP", "diff:broken-tail", "tail_eof.pkl", "pickle", _M, _tail_eof_without_stop),
    Sample(
        "broken-tail-stack-underflow", "diff:broken-tail", "tail_underflow.pkl", "pickle", _M, _tail_stack_underflow
    ),
    Sample("garbage-after-STOP", "diff:broken-tail", "tail_after_stop.pkl", "pickle", _M, _tail_garbage_after_stop),
    Sample("multi-pickle-payload-first", "diff:multi-pickle", "multi.pkl", "pickle", _M, _multi_pickle_first),
    # -- containers
    Sample(
        "p0-pickle-as-bin-torch-load-CVE-2025-10155",
        "container:renamed",
        "pytorch_model.bin",
        "torch",
        _M,
        lambda c: _classic(0, "os", "system", _sh(c)),
        needs_torch=True,
    ),
    Sample(
        "p4-pickle-as-ckpt-torch-load-CVE-2025-1889",
        "container:renamed",
        "last.ckpt",
        "torch",
        _M,
        lambda c: _classic(4, "builtins", "exec", _py(c)),
        needs_torch=True,
    ),
    Sample(
        "torch-zip-reduce-in-state-dict",
        "container:zip",
        "model_state.pt",
        "torch",
        _M,
        _torch_zip_poisoned,
        needs_torch=True,
    ),
    Sample(
        "torch-zip-sink-in-safe-rebuild-args",
        "container:zip",
        "rebuilt.pt",
        "torch",
        _M,
        _torch_zip_sink_in_rebuild_args,
        needs_torch=True,
    ),
    Sample(
        "torch-zip-bad-crc-CVE-2025-10156",
        "container:zip",
        "bad_crc.pt",
        "torch",
        _M,
        _torch_zip_bad_crc,
        needs_torch=True,
    ),
    Sample(
        "torch-zip-local-name-mismatch-CVE-2025-1944",
        "container:zip",
        "local_name.pth",
        "torch",
        _M,
        _torch_zip_local_name,
        needs_torch=True,
    ),
    Sample(
        "torch-zip-local-encrypted-flag-CVE-2025-1945-variant",
        "container:zip",
        "local_flag.pt",
        "torch",
        _M,
        _torch_zip_local_encrypted_flag,
        needs_torch=True,
    ),
    Sample(
        "torch-zip-duplicate-data-pkl-last-wins",
        "container:zip",
        "duplicate.pt",
        "torch",
        _M,
        _torch_zip_duplicate,
        needs_torch=True,
    ),
    Sample(
        "torch-zip-odd-prefix-folder",
        "container:zip",
        "resnet50_final_v2.pth",
        "torch",
        _M,
        _torch_zip_odd_prefix,
        needs_torch=True,
    ),
    Sample(
        "torch-zip-handmade-p0-data-pkl",
        "container:zip",
        "handmade.pt",
        "torch",
        _M,
        _torch_zip_handmade_data_pkl,
        needs_torch=True,
    ),
    Sample(
        "torch-zip-pickle-prepended",
        "container:zip",
        "prepended.pt",
        "torch",
        _M,
        _torch_zip_pickle_prepended,
        needs_torch=True,
    ),
    Sample(
        "torch-legacy-reduce-in-main-pickle",
        "container:legacy",
        "legacy_poisoned.pt",
        "torch",
        _M,
        _legacy_poisoned,
        needs_torch=True,
    ),
    Sample(
        "torch-legacy-payload-in-magic-number-pickle",
        "container:legacy",
        "legacy_magic.pt",
        "torch",
        _M,
        _legacy_magic_position,
        needs_torch=True,
    ),
    Sample(
        "torch-legacy-payload-in-sys-info-pickle",
        "container:legacy",
        "legacy_sys_info.pth",
        "torch",
        _M,
        _legacy_sys_info_position,
        needs_torch=True,
    ),
]

BENIGN: list[Sample] = [
    Sample(
        "benign-torch-zip-state-dict",
        "benign:state-dict",
        "weights.pt",
        "torch",
        _OK,
        _benign_state_dict,
        needs_torch=True,
    ),
    Sample(
        "benign-torch-zip-training-checkpoint",
        "benign:checkpoint",
        "epoch3.ckpt",
        "torch",
        _OK,
        _benign_training_checkpoint,
        needs_torch=True,
    ),
    Sample(
        "benign-torch-zip-tensor-zoo",
        "benign:checkpoint",
        "tensors.pt",
        "torch",
        _OK,
        _benign_tensor_zoo,
        needs_torch=True,
    ),
    Sample(
        "benign-torch-full-model-sequential",
        "benign:full-model",
        "sequential.pt",
        "torch",
        _OK,
        _benign_full_sequential,
        needs_torch=True,
    ),
    Sample(
        "benign-torch-full-model-custom-class",
        "benign:full-model",
        "tinynet.pth",
        "torch",
        _S,
        _benign_full_custom,
        needs_torch=True,
    ),
    Sample(
        "benign-torch-legacy-state-dict",
        "benign:state-dict",
        "legacy_weights.pt",
        "torch",
        _OK,
        _benign_legacy_state_dict,
        needs_torch=True,
    ),
    *[
        Sample(f"benign-plain-p{p}", "benign:plain", f"plain_p{p}.pkl", "pickle", _OK, _benign_plain(p))
        for p in range(6)
    ],
    Sample("benign-numpy-p2", "benign:numpy", "arrays_p2.pkl", "pickle", _OK, _benign_numpy(2)),
    Sample("benign-numpy-p5", "benign:numpy", "arrays_p5.pkl", "pickle", _OK, _benign_numpy(5)),
    Sample("benign-stdlib-values", "benign:plain", "stdlib_values.pkl", "pickle", _OK, _benign_stdlib_values),
    Sample(
        "benign-custom-class-instance",
        "benign:custom-class",
        "scaler.pkl",
        "pickle",
        _S,
        _benign_custom_class,
        needs_torch=True,
    ),
]

ALL: list[Sample] = MALICIOUS + BENIGN


def write(sample: Sample, directory: Path, canary: Path) -> Path:
    """Build ``sample`` (its payload aimed at ``canary``) into ``directory``; return the file's path."""
    path = directory / sample.filename
    path.write_bytes(sample.make(canary))
    return path
