"""What picklewarden knows about globals, as typed data keyed by exact resolved ``(module, qualname)``.

Allowlist first: a global is safe only when listed here (or in the reviewed generated data) by its exact
canonical name. The dangerous tables give severity and an explanation; anything in neither is *unknown*
and judged by how the pickle uses it. No substring or prefix matching of names: a dangerous *module* entry
covers that module and its submodules by package hierarchy, which is how Python itself nests them.
"""

from __future__ import annotations

import enum
import functools
import json
from pathlib import Path

from picklewarden._typing import TYPE_CHECKING, NamedTuple
from picklewarden.knowledge import compact
from picklewarden.knowledge.values import HAND_SAFE

if TYPE_CHECKING:
    from typing import Any, Final


class Category(enum.Enum):
    """What reaching a global lets a pickle do."""

    SAFE = "safe"
    PROCESS = "process"
    CODE = "code"
    IMPORT = "import"
    DESERIALIZE = "deserialize"
    FILE = "file"
    NETWORK = "network"
    INDIRECTION = "indirection"
    TAMPER = "tamper"


class Knowledge(NamedTuple):
    """What reaching one global (or module) lets a pickle do, and why."""

    category: Category
    reason: str


def _names(module: str, names: str, category: Category, reason: str) -> dict[tuple[str, str], Knowledge]:
    return {(module, name): Knowledge(category, reason) for name in names.split()}


_P, _C, _I, _D = Category.PROCESS, Category.CODE, Category.IMPORT, Category.DESERIALIZE
_F, _N, _X = Category.FILE, Category.NETWORK, Category.INDIRECTION

# Whole modules (and their submodules) in which every callable is a sink or a way to one.
DANGEROUS_MODULES: Final[dict[str, Knowledge]] = {
    name: Knowledge(category, reason)
    for names, category, reason in (
        (
            "os posix nt _posixsubprocess subprocess pty multiprocessing _multiprocessing",
            _P,
            "runs or controls processes",
        ),
        ("asyncio", _P, "asyncio's subprocess and event-loop internals start processes and run callbacks"),
        ("webbrowser", _P, "starts a browser process with an attacker-chosen command"),
        ("ctypes _ctypes", _P, "calls arbitrary native code"),
        ("signal _signal", _P, "sends signals and installs handlers"),
        ("pip ensurepip venv", _P, "runs package installers and interpreters"),
        ("_osx_support _aix_support", _P, "private helpers that run shell commands"),
        ("sys", _C, "interpreter internals: tracing hooks, module table, exit"),
        (
            "runpy code codeop timeit cProfile profile trace pdb bdb doctest idlelib site",
            _C,
            "compiles or runs Python source",
        ),
        ("_thread threading", _C, "starts threads that call attacker-chosen callables"),
        ("importlib pkgutil zipimport imp", _I, "imports modules by name"),
        (
            "pickle _pickle cPickle pickletools shelve marshal dill cloudpickle joblib jsonpickle yaml",
            _D,
            "deserializes a nested payload or code",
        ),
        # io and itertools are judged member by member: the closed world's native sinks are io.open,
        # io.FileIO and the buffered file wrappers, and itertools' callable-taking iterators (starmap, ...).
        ("shutil tempfile tarfile zipfile glob fileinput filecmp mmap", _F, "reads, writes, moves or deletes files"),
        (
            "socket _socket ssl http urllib urllib3 requests aiohttp httpx smtplib ftplib poplib imaplib "
            "nntplib telnetlib xmlrpc socketserver",
            _N,
            "opens network connections",
        ),
        (
            "contextlib weakref _weakref atexit sched copy inspect gc",
            _X,
            "calls or looks up other callables on the pickle's behalf",
        ),
        ("numpy.testing numpy.f2py numpy.distutils", _C, "numpy helpers that run code or compilers"),
        ("torch.hub", _N, "downloads and runs code from a hub"),
        ("torch.utils.cpp_extension", _C, "compiles and loads native extensions"),
        ("torch._dynamo torch._inductor torch.fx.experimental", _C, "compiles and runs generated code"),
        ("torch.jit torch.package", _C, "compiles, loads or runs serialized code"),
        # torch._C as a whole is torch's native core (every operator lives there), so its members are judged
        # one by one (TORCH_C_SINKS below, safe operators in SAFE); only these native submodules are sinks
        # through and through.
        (
            "torch._C._distributed torch._C._distributed_c10d torch._C._distributed_rpc torch._C._distributed_autograd",
            _N,
            "torch's distributed runtime: stores, process groups and RPC open network connections",
        ),
        ("torch._C._dynamo torch._C._jit torch._C._lazy_ts_backend", _C, "installs frame hooks or runs compiled code"),
        ("torch._C._profiler torch._C._monitor torch._C._itt", _F, "writes traces and event logs to files"),
    )
    for name in names.split()
}

# The sinks among torch._C's members: serialized-code loaders, file readers and writers, compilers, and
# setters of process-wide state that later loads rely on. Every other member is unknown unless listed safe.
TORCH_C_SINKS: Final[dict[tuple[str, str], Knowledge]] = {
    **_names(
        "torch._C",
        "import_ir_module import_ir_module_from_buffer _import_ir_module_from_package _load_for_lite_interpreter "
        "_load_for_lite_interpreter_from_buffer _load_jit_module_from_bytes _load_jit_module_from_file "
        "_load_mobile_module_from_bytes _load_mobile_module_from_file _pickle_load_obj "
        "DeserializationStorageContext _get_model_extra_files _get_model_extra_files_from_buffer",
        _D,
        "loads serialized TorchScript or pickled objects",
    ),
    **_names(
        "torch._C",
        "PyTorchFileReader PyTorchFileWriter _save_jit_module _save_mobile_module _save_parameters _pickle_save "
        "_backport_for_mobile _backport_for_mobile_to_buffer _backport_for_mobile_from_buffer "
        "_backport_for_mobile_from_buffer_to_buffer _gds_load_storage _gds_save_storage _get_file_format "
        "_jit_set_logging_stream _jit_set_onnx_log_output_stream _valgrind_toggle_and_dump_stats "
        "_dispatch_dump _dispatch_dump_table _mps_profilerStartTrace _VariableFunctionsClass.from_file "
        "_VariableFunctions.from_file",
        _F,
        "reads or writes files at a path the caller chooses",
    ),
    **_names(
        "torch._C",
        "CompilationUnit ScriptModule ScriptFunction ScriptMethod ScriptClass ScriptObject LiteScriptModule "
        "ScriptModuleSerializer _jit_script_compile _jit_script_class_compile _jit_script_compile_overload "
        "_jit_script_interface_compile _compile_graph_to_code_table parse_ir _parse_source_def "
        "_replace_overloaded_method_decl _run_emit_module_hook _jit_set_emit_hooks fork _dispatch_library "
        "_dispatch_set_report_error_callback _jit_nvfuser_set_comparison_callback _set_dispatch_mode "
        "_set_torch_function_state _set_tracing_state _tracer_set_get_unique_name_fn _logging_set_logger "
        "_set_worker_signal_handlers _set_worker_pids _set_print_stack_traces_on_fatal_signal _rpc_init",
        _C,
        "compiles or runs TorchScript, or installs callbacks and hooks the interpreter later calls",
    ),
    **_names(
        "torch._C",
        "_set_default_dtype _set_default_tensor_type _set_deterministic_algorithms _set_grad_enabled "
        "_set_check_sparse_tensor_invariants _set_warnAlways _set_generator_metaclass _add_docstr",
        Category.TAMPER,
        "changes torch's process-wide state for everything loaded afterwards",
    ),
}

# types: everything that builds code, functions or classes; its plain value types are listed safe.
_TYPES_SINKS: Final[dict[tuple[str, str], Knowledge]] = _names(
    "types",
    "FunctionType LambdaType CodeType MethodType CellType ModuleType new_class prepare_class resolve_bases "
    "coroutine DynamicClassAttribute MethodDescriptorType WrapperDescriptorType BuiltinFunctionType "
    "BuiltinMethodType FrameType TracebackType GeneratorType CoroutineType AsyncGeneratorType get_original_bases",
    _C,
    "builds functions, code objects, modules or classes from data",
)

# Single globals in otherwise harmless modules.
# Sinks of the ML packages outside the closed world, reviewed by hand (the generated ecosystem data holds only
# what unpickling their objects runs). Their other names stay unknown: suspicious, never safe.
ECOSYSTEM_SINKS: Final[dict[tuple[str, str], Knowledge]] = {
    **_names("pandas", "read_pickle", _D, "unpickles the file it is given (pickle.load)"),
    **_names("pandas.io.pickle", "read_pickle", _D, "unpickles the file it is given (pickle.load)"),
    **_names("pandas.io.pickle", "to_pickle", _F, "writes a file at a path the caller chooses"),
    **_names("pandas", "DataFrame.to_pickle Series.to_pickle DataFrame.to_csv Series.to_csv", _F, "writes a file"),
    **_names("pandas", "eval DataFrame.eval DataFrame.query", _C, "evaluates an expression string"),
    **_names(
        "transformers.dynamic_module_utils",
        "get_class_from_dynamic_module get_cached_module_file",
        _I,
        "downloads and imports a repository's Python module",
    ),
    **_names("transformers", "pipeline", _N, "downloads and loads a model (and its code, when trusted)"),
    **_names("transformers.pipelines", "pipeline", _N, "downloads and loads a model (and its code, when trusted)"),
    **_names("huggingface_hub", "hf_hub_download snapshot_download", _N, "downloads files from a hub"),
    **_names("huggingface_hub.file_download", "hf_hub_download", _N, "downloads files from a hub"),
    **_names("huggingface_hub._snapshot_download", "snapshot_download", _N, "downloads files from a hub"),
    **_names("scipy.io", "loadmat savemat", _F, "reads or writes a MATLAB file at a path the caller chooses"),
    **_names("scipy.io.matlab._mio", "loadmat savemat", _F, "reads or writes a MATLAB file at a path"),
}

DANGEROUS_NAMES: Final[dict[tuple[str, str], Knowledge]] = {
    **TORCH_C_SINKS,
    **_TYPES_SINKS,
    **_names("builtins", "eval exec compile breakpoint", _C, "evaluates Python source"),
    **_names("builtins", "__import__", _I, "imports a module by name"),
    **_names("builtins", "open", _F, "opens a file"),
    **_names("builtins", "input help", _C, "interacts with the terminal (pydoc pager, stdin)"),
    **_names("builtins", "exit quit", _P, "terminates the loading process"),
    **_names(
        "builtins",
        "getattr setattr delattr vars globals locals dir type super",
        _X,
        "reaches attributes and callables by computed names",
    ),
    **_names("builtins", "memoryview classmethod staticmethod property", _X, "wraps callables or raw memory"),
    **_names("uuid", "_get_command_stdout", _P, "runs a shell command"),
    **_names("imaplib", "IMAP4_stream", _P, "runs a command as its transport"),
    **_names("pydoc", "pipepager pager tempfilepager locate", _P, "runs a pager command or imports by name"),
    **_names("codecs", "open", _F, "opens a file"),
    **_names("logging", "FileHandler", _F, "opens a log file for writing"),
    **_names("logging.config", "dictConfig fileConfig listen", _C, "configuration may import and call"),
    **_names(
        "pathlib",
        "Path.write_text Path.write_bytes Path.open Path.unlink Path.rmdir Path.rename "
        "Path.replace Path.touch Path.mkdir Path.symlink_to Path.hardlink_to Path.chmod "
        "PosixPath.write_text PosixPath.write_bytes PosixPath.open PosixPath.unlink PosixPath.touch "
        "Path.read_text Path.read_bytes PosixPath.read_text PosixPath.read_bytes",
        _F,
        "touches files",
    ),
    **_names(
        "numpy",
        "load loadtxt genfromtxt fromfile memmap save savez savetxt",
        _F,
        "reads or writes files (numpy.load may unpickle)",
    ),
    **_names("numpy", "ndarray.tofile ndarray.dump", _F, "writes the array to a file (dump pickles it)"),
    **_names("numpy.testing._private.utils", "runstring", _C, "execs a string"),
    **_names("torch", "load", _D, "torch.load deserializes a nested payload with the full unpickler"),
    **_names(
        "torch.serialization",
        "load _load _legacy_load",
        _D,
        "torch.load deserializes a nested payload with the full unpickler",
    ),
    **_names("torch.storage", "_load_from_bytes", _D, "calls torch.load on bytes from the pickle"),
    **_names(
        "torch.fx.graph_module",
        "_forward_from_src reduce_graph_module reduce_package_graph_module "
        "reduce_deploy_graph_module _exec_with_source",
        _C,
        "executes Python source from the pickle",
    ),
    **_names("numpy.lib.npyio", "load", _D, "numpy.load may unpickle"),
    **_names(
        "copyreg",
        "add_extension remove_extension clear_extension_cache pickle constructor",
        Category.TAMPER,
        "changes how later pickles resolve globals or reduce objects",
    ),
    **_names("string", "Formatter", _X, "format fields reach attributes of arguments"),
    **_names("_codecs", "open", _F, "opens a file"),
    **ECOSYSTEM_SINKS,
}


# Canonical names the everyday checkpoint uses (THREATS.md section 6), on top of the generated data.
SAFE: Final[dict[tuple[str, str], str]] = {
    **{("collections", n): "standard container" for n in "OrderedDict defaultdict Counter deque".split()},
    **{
        ("builtins", n): "built-in value type"
        for n in "set frozenset dict list tuple bytearray bytes str int float complex bool slice range object "
        "NoneType Ellipsis NotImplemented".split()
    },
    ("copyreg", "_reconstructor"): "rebuilds an object from its base class; the classes are judged separately",
    ("copyreg", "__newobj__"): "calls cls.__new__; the class is judged separately",
    ("_codecs", "encode"): "how protocol-2 pickles encode bytes",
    ("argparse", "Namespace"): "training arguments stored in checkpoints",
    **{("datetime", n): "date and time value" for n in "datetime date time timedelta timezone".split()},
    **{
        ("pathlib", n): "path value (no file access)"
        for n in "Path PosixPath WindowsPath PurePath PurePosixPath PureWindowsPath".split()
    },
    ("decimal", "Decimal"): "number value",
    ("fractions", "Fraction"): "number value",
    ("uuid", "UUID"): "identifier value",
    ("enum", "Enum"): "enum base",
    ("re", "_compile"): "compiles a regular expression (no code execution)",
    ("numpy", "ndarray"): "numpy array",
    ("numpy", "dtype"): "numpy dtype",
    **{
        (m, n): "numpy array/scalar reconstructor"
        for m in ("numpy.core.multiarray", "numpy._core.multiarray")
        for n in ("_reconstruct", "scalar")
    },
    ("torch._utils", "_rebuild_tensor_v2"): "rebuilds a tensor from a storage",
    **{
        (m, "_frombuffer"): "numpy array from raw bytes (protocol-5 pickles)"
        for m in ("numpy.core.numeric", "numpy._core.numeric")
    },
    **HAND_SAFE,
}

# Attribute names that walk from any object to globals, builtins or arbitrary classes.
INTROSPECTION_ATTRIBUTES: Final[frozenset[str]] = frozenset(
    "__globals__ __builtins__ __dict__ __subclasses__ __getattribute__ __getattr__ __class__ __base__ "
    "__bases__ __mro__ __code__ __closure__ __func__ __self__ __module__ __init__ __call__ __reduce__ "
    "__reduce_ex__ __loader__ __spec__ __get__ __set__ __init_subclass__ __new__ "
    "__getitem__ __setstate__ __class_getitem__ f_globals f_locals f_back gi_frame tb_frame".split()
)


MODULE_STATE: Final[dict[tuple[str, str], str]] = {
    ("copyreg", "dispatch_table"): "how pickle reduces every type in the process",
    ("copyreg", "_extension_registry"): "the EXT opcodes' name table for every later load",
    ("copyreg", "_inverted_registry"): "the EXT opcodes' code table for every later load",
    ("copyreg", "_extension_cache"): "resolved EXT globals reused by every later load",
    ("torch.serialization", "_package_registry"): "the location tags every later torch.load restores with",
    ("warnings", "filters"): "which warnings the process shows",
}
"""Process-wide registries whose mutation changes later loads, whatever their names look like."""


_DATA = Path(__file__).parent / "data"


class Sinks:
    """The generated sink table (``data/generated_sinks.json``), read on the first lookup only: a file whose
    globals are all known safe never pays for parsing it."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._raw: dict[str, Any] | None = None
        self._made: dict[tuple[str, int], Knowledge] = {}

    def _table(self) -> dict[str, Any]:
        if self._raw is None:
            try:
                self._raw = json.loads(self._path.read_text("utf-8"))
            except FileNotFoundError:
                self._raw = {}
        return self._raw

    def get(self, key: tuple[str, str]) -> Knowledge | None:
        raw = self._table()
        entry = raw.get("sinks", {}).get(key[0], {}).get(key[1])
        if entry is None:
            return None
        category, at = entry  # [category, index into sink_reasons]: reasons are shared between entries
        known = self._made.get((category, at))
        if known is None:
            known = self._made[(category, at)] = Knowledge(Category(category), raw["sink_reasons"][at])
        return known


class Generated:
    """Reviewed data produced by ``scripts/gen_knowledge.py`` (never computed at scan time), read part by part
    from ``data/compact/`` (see ``compact.py``) on first use: a lookup answered by the safe list never parses
    the module list or the springboards. A missing part reads as empty (every name stays unknown)."""

    def __init__(self, directory: Path, sinks: Sinks) -> None:
        self._directory = directory
        self.sinks = sinks

    def _part(self, name: str) -> dict[str, Any]:
        try:
            return dict(json.loads((self._directory / name).read_text("utf-8")))
        except FileNotFoundError:
            return {}

    @functools.cached_property
    def _index(self) -> dict[str, Any]:
        return self._part(compact.INDEX)

    @functools.cached_property
    def _world(self) -> dict[str, Any]:
        return self._part(compact.WORLD)

    @functools.cached_property
    def springboards(self) -> dict[str, dict[str, str]]:
        """For each analysed module, its attributes that are modules (``shutil.os`` -> ``os``)."""
        return self._part(compact.SPRINGBOARDS)

    @functools.cached_property
    def safe(self) -> dict[tuple[str, str], str]:
        """Globals whose unpickling only stores data, with the reason."""
        parts = self._part(compact.SAFE)
        return {(module, qualname): reason for module, names in parts.items() for qualname, reason in names.items()}

    @functools.cached_property
    def closed(self) -> frozenset[str]:
        """Top-level names (the stdlib, numpy, torch) whose every module was imported and walked."""
        return frozenset(self._index.get("closed", ()))

    @functools.cached_property
    def modules(self) -> frozenset[str]:
        """Every module that was imported and walked (only those are closed)."""
        return frozenset(self._world.get("modules", ()))

    @functools.cached_property
    def failures(self) -> frozenset[str]:
        """Modules under ``closed`` that failed to import at generation time: they stay unknown."""
        return frozenset(self._world.get("failures", ()))

    @functools.cached_property
    def effects(self) -> dict[str, Knowledge]:
        """Modules whose import itself runs a program (an unguarded ``__main__``)."""
        return {m: Knowledge(Category(c), r) for m, (c, r) in self._index.get("effects", {}).items()}

    @property
    def versions(self) -> str:
        """What was analysed, for messages: ``python 3.11.7, numpy 2.4.6, torch 2.13.0``."""
        return str(self._index.get("versions", ""))


@functools.cache
def generated() -> Generated:
    """The shipped data, each part loaded on its first use."""
    return Generated(_DATA / "compact", Sinks(_DATA / "generated_sinks.json"))


class Ecosystem(NamedTuple):
    """Reviewed data produced by ``scripts/gen_ecosystem.py`` from the ML packages' own code (never imported
    at scan time): classes and functions whose unpickling only stores data, and those that reach a sink."""

    safe: dict[tuple[str, str], str]
    sinks: dict[tuple[str, str], Knowledge]


def _data(name: str) -> dict[str, Any]:
    """A shipped data file beside this module ({} when absent)."""
    try:
        return dict(json.loads((Path(__file__).parent / "data" / name).read_text("utf-8")))
    except FileNotFoundError:
        return {}


@functools.cache
def ecosystem() -> Ecosystem:
    """Load the shipped ecosystem data once, on first need."""
    raw = _data("ecosystem.json")
    return Ecosystem(
        {(e["module"], e["qualname"]): e["reason"] for e in raw.get("safe", [])},
        {(e["module"], e["qualname"]): Knowledge(Category(e["category"]), e["reason"]) for e in raw.get("sinks", [])},
    )
