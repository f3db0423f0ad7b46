"""The rules: stable ids, severity, CWE and help, once; every output format (text, JSON, SARIF,
``picklewarden rules``) reads them from here."""

from __future__ import annotations

from picklewarden._typing import TYPE_CHECKING, NamedTuple
from picklewarden.errors import LimitExceeded, MalformedPickle
from picklewarden.knowledge.tables import Category
from picklewarden.model import Finding, Indicator, Severity

if TYPE_CHECKING:
    from typing import Final


class Rule(NamedTuple):
    """One rule: its stable id, severity, CWE and the help carried into reports."""

    id: str
    name: str
    severity: Severity
    cwe: int
    summary: str
    help: str


RULES: Final[tuple[Rule, ...]] = (
    Rule(
        "PW100",
        "process-execution",
        Severity.CRITICAL,
        78,
        "Runs a process or native code while loading",
        "The pickle reaches a callable that starts processes, runs shell commands or native code "
        "(os.system, subprocess, ctypes, ...). Loading the file runs the attacker's command.",
    ),
    Rule(
        "PW101",
        "code-execution",
        Severity.CRITICAL,
        94,
        "Evaluates Python code while loading",
        "The pickle reaches eval/exec/compile, runpy, code objects or a helper that executes source. "
        "Loading the file runs arbitrary Python.",
    ),
    Rule(
        "PW102",
        "dynamic-import",
        Severity.CRITICAL,
        94,
        "Imports modules by computed name",
        "The pickle reaches importlib/__import__/pkgutil/pydoc.locate, which fetch any module or callable "
        "by a name chosen at load time: a way to reach any sink without naming it.",
    ),
    Rule(
        "PW103",
        "nested-deserialization",
        Severity.HIGH,
        502,
        "Deserializes a second payload",
        "The pickle hands data to another deserializer (pickle.loads, torch.load, marshal, yaml, ...): "
        "a payload hidden from a scanner that reads only the outer pickle.",
    ),
    Rule(
        "PW104",
        "file-access",
        Severity.HIGH,
        73,
        "Reads, writes or deletes files while loading",
        "The pickle reaches open(), shutil, tempfile, archive extraction or similar file operations.",
    ),
    Rule(
        "PW105",
        "network-access",
        Severity.HIGH,
        200,
        "Opens network connections while loading",
        "The pickle reaches sockets, HTTP clients or similar: exfiltration or second-stage download.",
    ),
    Rule(
        "PW106",
        "callable-indirection",
        Severity.HIGH,
        470,
        "Reaches callables through indirection",
        "The pickle calls something obtained indirectly: getattr/operator/functools helpers, a value "
        "returned by another call, or a __setstate__ planted by an earlier BUILD. Legitimate checkpoints "
        "never do this; attackers do it to hide the final sink.",
    ),
    Rule(
        "PW107",
        "global-tampering",
        Severity.HIGH,
        915,
        "Modifies an imported class or function",
        "BUILD or attribute writes target an imported global itself rather than a new instance: "
        "monkey-patching at load time (e.g. replacing a model's forward or pickle.dump).",
    ),
    Rule(
        "PW108",
        "extension-registry",
        Severity.HIGH,
        470,
        "Imports through the copyreg extension registry",
        "EXT1/EXT2/EXT4 import whatever global the loading process registered under a number; the file "
        "does not say which. No legitimate model uses extension codes.",
    ),
    Rule(
        "PW200",
        "unknown-global",
        Severity.LOW,
        502,
        "Imports a global picklewarden does not know",
        "Loading imports this module (so you must trust the package), but nothing in the file calls it. "
        "Trust it with a policy if it is your own code.",
    ),
    Rule(
        "PW201",
        "unknown-callable",
        Severity.MEDIUM,
        502,
        "Calls or instantiates an unknown global",
        "Loading calls or constructs a global that is neither known safe nor known dangerous, typically a "
        "third-party model class. Review the package it comes from, or trust it with a policy.",
    ),
    Rule(
        "PW300",
        "malformed-pickle",
        Severity.MEDIUM,
        20,
        "The pickle stream is broken",
        "The real unpickler fails here. Everything before this point would already have executed, and "
        "was analysed; a broken tail is a known way to hide a payload from scanners.",
    ),
    Rule(
        "PW301",
        "limit-exceeded",
        Severity.MEDIUM,
        400,
        "A resource limit was reached",
        "The file exceeds a bound (size, opcodes, memo, members...). Analysis stopped there, so the file "
        "is not known to be safe. Raise the limit only for files you have reason to trust.",
    ),
    Rule(
        "PW302",
        "trailing-data",
        Severity.LOW,
        20,
        "Data follows the last pickle",
        "Bytes after the final STOP are not a pickle. Loaders ignore them, but they can smuggle data.",
    ),
    Rule(
        "PW310",
        "archive-anomaly",
        Severity.MEDIUM,
        434,
        "The archive is malformed in a way torch tolerates",
        "torch's own ZIP reader accepts archives that other tools reject or read differently (bad CRC, "
        "flag bits, mismatched names, duplicates, leading junk): a parser differential used to hide "
        "payloads. picklewarden reads the entries torch reads.",
    ),
    Rule(
        "PW303",
        "extension-mismatch",
        Severity.LOW,
        646,
        "The file's extension does not match its content",
        "Formats are detected by content; the extension is only a hint. A name promising data that cannot "
        "run code (.safetensors, .npy, .json, .onnx, images...) on a file whose loaders execute pickles is a "
        "disguise. Harmless mismatches (a raw pickle named .pt) are reported at info level.",
    ),
    Rule(
        "PW304",
        "archive-path-traversal",
        Severity.HIGH,
        22,
        "An archive member escapes the extraction directory",
        "A member name with '..' components or an absolute path, or a link member pointing outside the "
        "archive, makes extraction write or read files elsewhere on the victim's disk (tarfile/zipfile "
        "extraction, torch's legacy tar loader).",
    ),
    Rule(
        "PW305",
        "decompression-bomb",
        Severity.MEDIUM,
        409,
        "A compressed stream expands beyond the allowed ratio",
        "The data decompresses to far more than its compressed size: a decompression bomb built to exhaust "
        "memory or disk. Decompression stopped there, so the file is not known to be safe.",
    ),
    Rule(
        "PW306",
        "storage-inconsistency",
        Severity.MEDIUM,
        130,
        "Tensor storages do not match the archive entries",
        "Every persistent id in a torch pickle names a data/<key> entry whose size is the declared element "
        "count times the element size. Missing, short, oversized or unreferenced entries make torch fail, "
        "read memory it did not fill, or carry data no tensor uses.",
    ),
    Rule(
        "PW307",
        "pickle-in-storage",
        Severity.MEDIUM,
        506,
        "A tensor storage holds a pickle",
        "Raw tensor data is never a pickle. A storage entry that decodes as one is a staged payload for "
        "code elsewhere to unpickle; it is scanned and its findings reported.",
    ),
    Rule(
        "PW308",
        "embedded-payload",
        Severity.INFO,
        506,
        "Bytes inside the pickle hold another payload",
        "A bytes or string value (possibly base64, hex or compressed) is itself a pickle, archive or array "
        "file. It was decoded and scanned; its findings are reported with the path through the nesting.",
    ),
    Rule(
        "PW309",
        "reader-differential",
        Severity.MEDIUM,
        436,
        "Two loaders read this file differently",
        "The loader that matters (torch, joblib, numpy) and another common reader see different bytes or "
        "different pickles: Python's zipfile cannot read what torch reads, a joblib file executes other "
        "opcodes under pickle.load, a tar header is also a pickle. Scanners that use the other reader miss "
        "what runs.",
    ),
    Rule(
        "PW311",
        "torchscript-code",
        Severity.INFO,
        94,
        "TorchScript archive with compiled code",
        "torch.jit.load compiles the archive's code/ sources and runs any scripted __setstate__ while "
        "loading. TorchScript cannot import Python modules, but torch operators can touch files; the "
        "sources are listed so they can be reviewed.",
    ),
    Rule(
        "PW312",
        "torchscript-file-access",
        Severity.HIGH,
        73,
        "TorchScript code reads or writes files",
        "The archive's TorchScript calls torch.save or torch.from_file (aten::save, aten::from_file): "
        "writing or mapping files at a path chosen by the file. In __setstate__ this runs during "
        "torch.jit.load.",
    ),
    Rule(
        "PW313",
        "torchscript-native-op",
        Severity.MEDIUM,
        829,
        "TorchScript code calls operators outside core torch",
        "Custom or distributed operators (torch.ops.<namespace>) run native code from libraries the loading "
        "process registered, or talk to other processes. What they do is not visible in the file.",
    ),
    Rule(
        "PW314",
        "array-type-confusion",
        Severity.MEDIUM,
        843,
        "An array's declared type contradicts how it is read",
        "A pickled numpy dtype whose object flag disagrees with its type code makes numpy treat raw bytes "
        "as object pointers (memory corruption) or unpickle what looks like numbers.",
    ),
    Rule(
        "PW400",
        "keras-lambda-bytecode",
        Severity.CRITICAL,
        94,
        "A Keras Lambda layer carries Python bytecode",
        "keras.models.load_model rebuilds Lambda layers from marshalled bytecode stored in the model config "
        "and runs it (safe_mode=False, or any Keras before 2.13). The bytecode is disassembled, never loaded, "
        "and shown as evidence.",
    ),
    Rule(
        "PW401",
        "yaml-python-tag",
        Severity.MEDIUM,
        502,
        "A YAML document uses Python tags",
        "!!python/object/apply, /new, /name and /module tags make PyYAML's unsafe loaders import and call "
        "the named callable (yaml.unsafe_load, Loader=yaml.UnsafeLoader or the old yaml.load default); the "
        "callable is judged like a pickle global. Plain value tags (tuple, bytes...) are harmless.",
    ),
    Rule(
        "PW402",
        "config-callable",
        Severity.INFO,
        829,
        "A config names a callable its loader instantiates",
        "Hydra/OmegaConf _target_ entries and Keras module/class_name entries import and call what they name "
        "when the config is instantiated. Known sinks are reported under their own rules; other callables "
        "are listed here so the packages they come from can be reviewed.",
    ),
    Rule(
        "PW403",
        "template-injection",
        Severity.CRITICAL,
        1336,
        "A Jinja template reaches Python internals",
        "The template (a GGUF chat template, for instance) walks private or dunder attributes such as "
        "__class__, __globals__ or __subclasses__. Runtimes that render it with an unsandboxed Jinja "
        "environment (CVE-2024-34359) run the code it reaches.",
    ),
    Rule(
        "PW404",
        "external-data-escape",
        Severity.HIGH,
        22,
        "Model data is read from outside the model directory",
        "An ONNX tensor's external_data location is absolute or climbs out with '..': loading the model "
        "reads (and may disclose) an arbitrary file of the victim's disk.",
    ),
    Rule(
        "PW405",
        "custom-operator",
        Severity.INFO,
        829,
        "The model uses operators outside the standard domains",
        "ONNX nodes in a custom domain run kernels from a library the loading process registers; what they "
        "do is not visible in the file.",
    ),
    Rule(
        "PW406",
        "executable",
        Severity.HIGH,
        506,
        "An executable where a model is expected",
        "The file is a native executable (ELF, PE, Mach-O), a script, or a llamafile (an executable that "
        "bundles weights). Running it runs its code; no model loader needs one.",
    ),
    Rule(
        "PW407",
        "remote-code",
        Severity.MEDIUM,
        829,
        "The repository requires trust_remote_code",
        "config.json auto_map makes transformers import Python files shipped with the model when "
        "trust_remote_code=True. Those files run with the user's rights; review them before trusting.",
    ),
    Rule(
        "PW408",
        "invalid-format",
        Severity.MEDIUM,
        20,
        "A data-only model format is malformed",
        "A safetensors, GGUF or ONNX file (formats whose loaders never unpickle) breaks its own "
        "specification: out-of-range sizes or offsets, overlapping or missing tensor data. Loaders refuse it "
        "or read memory it does not describe; crafted headers target parser bugs.",
    ),
)
BY_ID: Final[dict[str, Rule]] = {rule.id: rule for rule in RULES}

RULE_FOR_CATEGORY: Final[dict[Category, str]] = {
    Category.PROCESS: "PW100",
    Category.CODE: "PW101",
    Category.IMPORT: "PW102",
    Category.DESERIALIZE: "PW103",
    Category.FILE: "PW104",
    Category.NETWORK: "PW105",
    Category.INDIRECTION: "PW106",
    Category.TAMPER: "PW107",
}
"""The rule that reports reaching a callable of each dangerous category (pickles and configs alike)."""


def finding(
    rule_id: str,
    message: str,
    *,
    member: str = "",
    offset: int | None = None,
    evidence: str = "",
    symbol: str = "",
    severity: Severity | None = None,
    indicators: tuple[Indicator, ...] = (),
) -> Finding:
    rule = BY_ID[rule_id]
    level = rule.severity if severity is None else severity
    return Finding(rule.id, level, message, member, offset, evidence, symbol, indicators)


def error_finding(error: Exception, member: str) -> Finding:
    """The finding for a stream the machine could not finish."""
    if isinstance(error, LimitExceeded):
        return finding("PW301", str(error), member=member, offset=error.offset)
    offset = error.offset if isinstance(error, MalformedPickle) else None
    reason = error.reason if isinstance(error, MalformedPickle) else str(error)
    return finding("PW300", f"pickle breaks: {reason}", member=member, offset=offset)
