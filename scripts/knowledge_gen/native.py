"""Reviewed table of *native* callables (no bytecode to walk) in the stdlib, numpy and torch.

A native callable is a builtin function or method, a method descriptor, or a class implemented in C/C++
(including pybind11 classes). The bytecode walk cannot see what they do, so each one is listed here, by
the module that defines it (its ``__module__``), as safe or as a sink of one category, with a reason.

Matching is by exact name along the module/class hierarchy, never by substring: an entry with names
``"FileIO"`` covers ``FileIO`` and its methods; an entry with no names covers every native callable the
module defines. The most specific entry wins (a name entry over its module's entry), so a module can be
listed safe with its few sinks listed by name. ``tests/test_closed_world.py`` enumerates the native
callables of the installed packages and fails on any this table does not cover.

Sinks listed here are also roots of the generator's call graph: a Python function that calls one is a sink
too (``torch.jit.load`` through ``torch._C.import_ir_module``).
"""

from __future__ import annotations

from dataclasses import dataclass

SAFE = "safe"
PROCESS, CODE, DESER, IMPORT, NET, FILE, TAMPER, INDIR = (
    "process",
    "code",
    "deserialize",
    "import",
    "network",
    "file",
    "tamper",
    "indirection",
)

SINK_CATEGORIES = (PROCESS, CODE, DESER, IMPORT, NET, FILE, TAMPER, INDIR)
"""Most severe first: the generator gives a caller of several sinks the first category it reaches."""


@dataclass(frozen=True)
class Native:
    module: str
    """The defining module (the callable's ``__module__``)."""
    names: str
    """Space-separated qualnames; empty for the whole module."""
    category: str
    reason: str


_VALUES = "builds or computes values in memory; no I/O and no callback into Python given as data"

NATIVE: tuple[Native, ...] = (
    # ---- the standard library: modules whose natives only compute on values -------------------------
    *(
        Native(m, "", SAFE, _VALUES)
        for m in (
            "_abc _bisect _collections _contextvars _crypt _csv _elementtree _hashlib _heapq _json _lzma "
            "_markupbase _md5 _multibytecodec _opcode _pydecimal _random _sha1 _sha256 _sha512 _sha3 _blake2 "
            "_sre _stat _statistics _string _struct _symtable _typing _uuid _bz2 _zoneinfo _datetime _decimal "
            "_codecs_cn _codecs_hk _codecs_iso2022 _codecs_jp _codecs_kr _codecs_tw _queue _heapq _csv "
            "array audioop binascii cmath collections datetime decimal keyword math pyexpat random "
            "unicodedata zlib zoneinfo xml.etree.ElementTree mailcap shlex zipfile http.client "
            "email._header_value_parser unittest.mock _random _pickle_buffer select _tracemalloc _warnings "
            "grp pwd spwd nis termios time _locale _bisect"
        ).split()
    ),
    Native("zoneinfo", "ZoneInfo", SAFE, "reads the system's time-zone database by key (how zoneinfo pickles)"),
    Native("_codecs", "", SAFE, "text codecs on in-memory data"),
    Native("_codecs", "register", TAMPER, "registers a codec search function: every later codec lookup calls it"),
    Native("_codecs", "register_error", TAMPER, "registers an error handler that later decoding calls"),
    Native("codecs", "", SAFE, "the built-in codec error handlers: compute replacement text"),
    Native("pickle", "PickleBuffer", SAFE, "a view of a bytes-like buffer (protocol-5 pickles)"),
    Native("types", "", SAFE, "SimpleNamespace attribute bags and typing aliases: values only"),
    Native("builtins", "", SAFE, "built-in value types, exceptions and pure functions"),
    Native("builtins", "eval exec", CODE, "evaluates Python source or a code object"),
    Native("builtins", "compile", CODE, "compiles Python source to a code object"),
    Native("builtins", "breakpoint", CODE, "calls sys.breakpointhook (pdb by default)"),
    Native("builtins", "input", CODE, "reads the terminal, calling readline hooks"),
    Native("builtins", "__import__ __build_class__", IMPORT, "imports a module by name or runs a class body"),
    Native("builtins", "code function frame", CODE, "code, function and frame objects build runnable code"),
    Native(
        "builtins",
        "getattr setattr delattr vars globals locals dir super",
        INDIR,
        "reaches attributes and callables by computed names",
    ),
    Native(
        "builtins",
        "map filter sorted min max iter",
        INDIR,
        "calls a callable given as data (key= or function argument) on each item",
    ),
    Native("builtins", "memoryview classmethod staticmethod property", INDIR, "wraps callables or raw memory"),
    Native("builtins", "type", INDIR, "builds classes with attribute dicts given as data"),
    Native("io", "", FILE, "io.open and io.open_code open files"),
    Native("io", "text_encoding", SAFE, "returns an encoding name"),
    Native("_io", "", FILE, "file objects: open, read, write and truncate files"),
    Native("_io", "BytesIO StringIO IncrementalNewlineDecoder", SAFE, "in-memory buffers"),
    Native("posix", "", PROCESS, "the os module's native core: processes, signals, files, environment"),
    Native("_posixsubprocess", "", PROCESS, "forks and executes programs"),
    Native("_posixshmem", "", FILE, "creates and removes shared-memory files"),
    Native("_multiprocessing", "", PROCESS, "named semaphores and process synchronisation"),
    Native("_signal", "", PROCESS, "sends signals and installs signal handlers that call Python callables"),
    Native("_thread", "", CODE, "starts threads that call Python callables given as data"),
    Native("_thread", "allocate_lock allocate LockType RLock _count get_ident get_native_id", SAFE, "locks and ids"),
    Native("_ctypes", "", PROCESS, "loads native libraries and calls native code"),
    Native("_imp", "", IMPORT, "creates and executes modules"),
    Native("_imp", "extension_suffixes is_builtin is_frozen is_frozen_package source_hash lock_held", SAFE, "queries"),
    Native("marshal", "", DESER, "unmarshals code objects"),
    Native("marshal", "dumps", SAFE, "marshals a value to bytes in memory"),
    Native("_pickle", "", DESER, "unpickles data (a nested payload)"),
    Native("_pickle", "dumps PickleError PicklingError UnpicklingError", SAFE, "pickles in memory; exceptions"),
    Native("_pickle", "Pickler dump", FILE, "writes a pickle to a file object"),
    Native("_socket", "", NET, "opens sockets and resolves host names"),
    Native("_ssl", "", NET, "TLS connections and certificate fetches"),
    Native("_sqlite3 sqlite3", "", FILE, "opens database files; extensions can load native code"),
    Native("re", "", SAFE, "compiled regular expressions and matches"),
    Native("re", "Pattern.sub Pattern.subn Match.expand", INDIR, "calls a replacement callable given as data"),
    Native("functools", "partial _lru_cache_wrapper", INDIR, "calls the callable it wraps"),
    Native("_tokenize", "", SAFE, "tokenizes source text (no execution)"),
    Native("ssl", "", NET, "TLS sockets and contexts"),
    Native("_asyncio", "", CODE, "tasks and futures that run coroutines and callbacks given as data"),
    Native("_operator", "", SAFE, "arithmetic and comparison on the arguments"),
    Native("operator", "attrgetter methodcaller", INDIR, "reaches attributes and methods by computed names"),
    Native("operator", "itemgetter", SAFE, "looks up items of its argument"),
    Native("_operator", "call", INDIR, "calls a callable given as data"),
    Native("_operator", "setitem delitem iadd iconcat", TAMPER, "mutates the container it is given in place"),
    Native("_functools", "", INDIR, "calls a callable given as data"),
    Native("_functools", "cmp_to_key", SAFE, "wraps a comparison; calls it only when compared"),
    Native("itertools", "", SAFE, "iterators over the arguments"),
    Native(
        "itertools",
        "accumulate starmap dropwhile filterfalse groupby takewhile",
        INDIR,
        "calls a callable given as data on each item",
    ),
    Native("_weakref", "", INDIR, "weak references call finalizer callbacks given as data"),
    Native("weakref", "", INDIR, "weak references call finalizer callbacks given as data"),
    Native("atexit", "", INDIR, "registers callables that run when the interpreter exits"),
    Native("gc", "", INDIR, "reaches arbitrary live objects (get_objects, get_referrers)"),
    Native("gc", "collect disable enable freeze get_count get_debug get_freeze_count", SAFE, "collector control"),
    Native("sys", "", CODE, "interpreter internals: tracing and audit hooks, frames, exit"),
    Native("faulthandler", "", PROCESS, "crashes the process or dumps tracebacks to files on a timer"),
    Native("readline", "", FILE, "reads and writes history and init files"),
    Native("syslog", "", FILE, "writes to the system log"),
    Native("resource", "", PROCESS, "changes the process's resource limits"),
    Native("fcntl", "", FILE, "file-descriptor control and locks"),
    Native("mmap", "", FILE, "maps files into memory for reading and writing"),
    Native("_curses _curses_panel", "", FILE, "drives the terminal; putwin/getwin write and read files"),
    Native("ossaudiodev", "", FILE, "opens audio devices"),
    Native("_tkinter", "", CODE, "a Tcl interpreter: Tcl's exec runs programs"),
    Native("_lsprof", "", CODE, "a profiler that runs callables given as data"),
    Native("_testcapi _testinternalcapi _testbuffer _testmultiphase _testimportmultiple", "", CODE, "C-API tests"),
    Native("_xxsubinterpreters _xxinterpchannels _xxtestfuzz xxsubtype xxlimited", "", CODE, "interpreter tests"),
    Native("_dbm _gdbm", "", FILE, "opens database files"),
    # ---- numpy -------------------------------------------------------------------------------------
    Native("numpy", "", SAFE, "array types, dtypes and array functions computing in memory"),
    Native("numpy", "ndarray.tofile generic.tofile", FILE, "writes the array's bytes to a file path"),
    Native("numpy", "ndarray.dump generic.dump", FILE, "pickles the array to a file path"),
    Native("numpy._core._multiarray_umath", "", SAFE, "array internals computing in memory"),
    Native("numpy._core._multiarray_umath", "_load_from_filelike fromfile", FILE, "reads an array from a file"),
    Native(
        "numpy._core._multiarray_umath",
        "set_datetimeparse_function set_typeDict _reload_guard _set_madvise_hugepage "
        "_set_numpy_warn_if_no_mem_policy add_docstring",
        TAMPER,
        "changes numpy's process-wide state",
    ),
    Native("numpy._core.multiarray", "", SAFE, "array reconstructors (how numpy arrays pickle)"),
    Native("numpy.dtypes numpy.char numpy.lib numpy.lib.array_utils numpy.linalg.lapack_lite", "", SAFE, _VALUES),
    Native("numpy._core._methods numpy.f2py.auxfuncs numpy.f2py.crackfortran", "", SAFE, "bound regex/ufunc methods"),
    Native("numpy.distutils.misc_util numpy.distutils.command.build_src", "", SAFE, "bound regex methods"),
    Native("numpy.distutils.extension numpy.distutils.fcompiler", "", SAFE, "bound regex methods"),
    *(
        Native(m, "", SAFE, "random bit generators: state in memory")
        for m in (
            "numpy.random._generator numpy.random._mt19937 numpy.random._pcg64 numpy.random._philox "
            "numpy.random._sfc64 numpy.random.bit_generator numpy.random.mtrand numpy.random._common "
            "numpy.random._bounded_integers"
        ).split()
    ),
    Native(
        "numpy._core._multiarray_tests numpy._core._rational_tests numpy._core._simd numpy._core._umath_tests "
        "numpy._core._struct_ufunc_tests numpy._core._operand_flag_tests",
        "",
        CODE,
        "numpy's C test helpers: memory-unsafe entry points meant only for its test suite",
    ),
    # ---- torch -------------------------------------------------------------------------------------
    Native("torch", "", SAFE, "tensor types and operators computing in memory"),
    Native("torch", "from_file", FILE, "maps a file at a given path into a tensor (creates it with shared=True)"),
    Native("torch", "PyTorchFileReader", FILE, "reads a torch archive at a given path"),
    Native("torch", "PyTorchFileWriter", FILE, "writes a torch archive at a given path"),
    Native(
        "torch",
        "ScriptModule.save ScriptModule._save_for_mobile ScriptModule._save_to_buffer_for_mobile "
        "ScriptModuleSerializer ScriptModule.dump",
        FILE,
        "writes TorchScript archives to a path",
    ),
    Native(
        "torch",
        "ScriptModule ScriptClass ScriptClassFunction ScriptMethod ScriptObject LiteScriptModule StaticModule "
        "ThroughputBenchmark",
        CODE,
        "loads, compiles or runs TorchScript code",
    ),
    Native("torch", "Future.add_done_callback Future.then", INDIR, "calls a callable given as data"),
    Native(
        "torch",
        "_functionalize_replace _functionalize_unsafe_set _functionalize_commit_update",
        SAFE,
        "functionalization bookkeeping on tensors",
    ),
    Native("torch._C", "", SAFE, "tensor operators, enums, guards and runtime queries computing in memory"),
    Native(
        "torch._C",
        "import_ir_module import_ir_module_from_buffer _import_ir_module_from_package "
        "_load_for_lite_interpreter _load_for_lite_interpreter_from_buffer _load_jit_module_from_bytes "
        "_load_jit_module_from_file _load_mobile_module_from_bytes _load_mobile_module_from_file "
        "_jit_script_compile _jit_script_class_compile _jit_script_compile_overload _jit_script_interface_compile "
        "_compile_graph_to_code_table _parse_source_def _replace_overloaded_method_decl _run_emit_module_hook "
        "_jit_set_emit_hooks _jit_run_cpp_tests "
        "_jit_to_backend _jit_to_backend_selective _create_function_from_trace _create_function_from_trace_with_dict "
        "_create_module_with_type _jit_pass_custom_pattern_based_rewrite _jit_trace_graph _jit_trace_module "
        "fork wait _awaitable _awaitable_wait parse_ir",
        CODE,
        "loads, compiles or runs TorchScript code",
    ),
    Native("torch._C", "_pickle_load_obj", DESER, "unpickles TorchScript data"),
    Native(
        "torch._C",
        "_VariableFunctionsClass.from_file StorageBase.from_file StorageBase._set_from_file",
        FILE,
        "maps a file at a given path into a tensor or storage (creates it with shared=True)",
    ),
    Native(
        "torch._C",
        "StorageBase._new_shared_filename_cpu StorageBase._new_using_filename_cpu StorageBase._share_filename_cpu_ "
        "StorageBase._new_shared_fd_cpu StorageBase._new_with_weak_ptr",
        FILE,
        "opens or creates a named shared-memory file",
    ),
    Native(
        "torch._C",
        "_save_jit_module _save_mobile_module _save_parameters _get_model_extra_files",
        FILE,
        "writes or reads model files at a given path",
    ),
    Native("torch._C", "_get_file_format", FILE, "reads a torch archive at a given path"),
    Native(
        "torch._C",
        "_dispatch_library _DispatchModule _dispatch_pystub _dispatch_set_report_error_callback "
        "_set_dispatch_mode _push_on_torch_dispatch_stack _set_torch_function_state _register_py_class_for_device "
        "_register_opaque_type _jit_register_decomposition_for_schema _jit_register_shape_compute_graph_for_node "
        "_set_worker_signal_handlers _initCrashHandler _set_print_stack_traces_on_fatal_signal "
        "_tracer_set_get_unique_name_fn _logging_set_logger _jit_nvfuser_set_comparison_callback "
        "_set_default_dtype _set_default_tensor_type _add_docstr _set_deterministic_algorithms",
        TAMPER,
        "replaces operator implementations, dispatch modes, hooks or process-wide defaults",
    ),
    Native("torch._C", "_EngineBase.queue_callback", INDIR, "calls a callable given as data"),
    Native("torch._C", "_FunctionBase.register_hook _FunctionBase.register_prehook", INDIR, "installs hooks"),
    Native("torch._C", "_valgrind_toggle_and_dump_stats _mps_profilerStartTrace", FILE, "writes profiling output"),
    *(
        Native(m, "", SAFE, "tensor operators and their argument types computing in memory")
        for m in (
            "torch._C._nn torch._C._fft torch._C._linalg torch._C._special torch._C._sparse torch._C._nested "
            "torch._C._functorch torch._C._functionalization torch._C._cpu torch._C._verbose torch._C._itt "
            "torch._C._instruction_counter torch._C._onnx torch._C._jit_tree_views torch._C.cpp torch._C.cpp.nn "
            "torch.return_types torch.cuda torch.cuda.sparse torch.sparse torch.nn.functional torch.nn.attention "
            "torch.backends.cuda torch._sources torch.jit._recursive torch._higher_order_ops.schema "
            "torch.accelerator.graphs torch.mtia.mtia_graph torch._inductor.dependencies torch._inductor.ops_handler "
            "torch.fx.graph torch._dynamo.utils torch._C._dynamo.utils torch._C._acc torch._C._lazy "
            "torch._C._lazy_ts_backend torch._C._autograd torch._C._profiler torch.utils.backend_registration "
            "torch._C._dynamo.guards torch.testing._internal.distributed.fake_pg torch._C._mps torch._C._cudart "
            "torch._C._cuda torch._C._xpu torch._C._mtia torch._C._monitor torch._C._export"
        ).split()
    ),
    Native(
        "torch._C._acc",
        "register_python_privateuseone_device_guard register_python_privateuseone_hook",
        TAMPER,
        "installs Python hooks for a device type",
    ),
    Native("torch._C._autograd", "_ProfilerResult.save", FILE, "writes a profiler trace to a path"),
    Native("torch._C", "_set_autograd_fallback_mode", TAMPER, "changes autograd's process-wide fallback"),
    Native("torch._C._autograd", "_push_saved_tensors_default_hooks", TAMPER, "installs process-wide autograd hooks"),
    Native("torch._C._profiler", "_ExperimentalConfig", SAFE, "profiler settings"),
    Native("torch._C._profiler", "_RecordFunctionFast", SAFE, "a profiling range marker"),
    Native("torch._C._monitor", "register_event_handler", INDIR, "calls a callable given as data on each event"),
    Native("torch._C._export", "deserialize_exported_program", DESER, "deserializes an exported program"),
    Native(
        "torch._C._export",
        "register_example_upgraders deregister_example_upgraders",
        TAMPER,
        "changes how later exported programs are upgraded",
    ),
    Native("torch._C._dynamo.guards", "", INDIR, "guards call Python callables given as data"),
    Native(
        "torch._C._dynamo torch._C._dynamo.eval_frame torch._C._dynamo.autograd_compiler",
        "",
        CODE,
        "installs frame-evaluation callbacks that run Python code on every frame",
    ),
    Native("torch._C._te torch._C._nativert", "", CODE, "compiles and runs generated kernels or programs"),
    Native("torch._C._aoti", "", PROCESS, "loads a compiled shared library and runs it"),
    Native(
        "torch._C._distributed_c10d torch._C._distributed_rpc torch._C._distributed_rpc_testing "
        "torch._C._distributed_autograd torch.distributed.distributed_c10d torch.distributed._symmetric_memory "
        "torch.distributed.elastic.rendezvous.etcd_store torch.distributed.rpc.api torch.distributed.rpc.options "
        "torch.distributed.rpc.backend_registry",
        "",
        NET,
        "process groups, stores and RPC agents: connect to other hosts",
    ),
    Native("torch._C._distributed_c10d", "FileStore", FILE, "creates and writes a store file at a given path"),
    Native("torch._C._distributed_c10d", "HashStore", SAFE, "an in-memory key-value store"),
    Native("torch.jit", "", CODE, "compiles or runs TorchScript code"),
    Native("torch.jit", "Future", INDIR, "a future that calls callbacks given as data"),
    Native("torch.multiprocessing torch.multiprocessing.spawn", "", PROCESS, "sets the process's parent-death signal"),
)


def expand(table: tuple[Native, ...] = NATIVE) -> dict[tuple[str, str], tuple[str, str]]:
    """``(module, qualname or "") -> (category, reason)``; an empty qualname stands for the whole module."""
    out: dict[tuple[str, str], tuple[str, str]] = {}
    for entry in table:
        for module in entry.module.split():
            for name in entry.names.split() or [""]:
                out[(module, name)] = (entry.category, entry.reason)
    return out


def lookup(module: str, qualname: str, table: dict[tuple[str, str], tuple[str, str]]) -> tuple[str, str] | None:
    """The most specific entry covering ``module.qualname``: the name, its enclosing classes, the module."""
    parts = qualname.split(".")
    for i in range(len(parts), 0, -1):
        found = table.get((module, ".".join(parts[:i])))
        if found is not None:
            return found
    return table.get((module, ""))
