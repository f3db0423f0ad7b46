"""Static introspection of the imported domain: module items, springboards and attribute lookup that never calls
descriptors, ``__getattr__`` or properties."""

import importlib
import os
import sys
import types
import warnings
from typing import Any

from knowledge_gen.domain import PACKAGES, in_domain

GENERATED_BY = "scripts/gen_knowledge.py"
CATEGORIES = ("process", "code", "deserialize", "import", "network", "file", "tamper", "indirection")
"""Closed set of sink categories, most severe first (the order picks a node's category)."""

MISSING = object()


def log(message: str) -> None:
    print(f"gen_knowledge: {message}", file=sys.stderr)


def brief(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".splitlines()[0]
    return text if len(text) <= 160 else text[:157] + "..."


def guarded_import(name: str) -> types.ModuleType | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return importlib.import_module(name)
    except BaseException as exc:  # any import failure (even SystemExit) just skips the module
        if isinstance(exc, KeyboardInterrupt):
            raise
        return None


def module_key(key: str, module: types.ModuleType) -> str:
    """A module's real ``__name__``, unless importing that name gives a different module (``_io``)."""
    name = vars(module).get("__name__")
    if isinstance(name, str) and sys.modules.get(name) is module:
        return name
    return key


def from_stdlib(module: types.ModuleType) -> bool:
    """Built-in, frozen, or a file under the stdlib directories (not a third-party module shadowing one)."""
    import sysconfig

    path = vars(module).get("__file__")
    if not isinstance(path, str):
        return True
    roots = {os.path.realpath(sysconfig.get_paths()[k]) for k in ("stdlib", "platstdlib")}
    real = os.path.realpath(path)
    return any(real.startswith(root + os.sep) for root in roots) and "site-packages" not in real.split(os.sep)


def domain_modules() -> dict[str, types.ModuleType]:
    out: dict[str, types.ModuleType] = {}
    for key, module in sorted(sys.modules.items()):
        if not issubclass(type(module), types.ModuleType) or not in_domain(key):
            continue
        if key.split(".")[0] not in PACKAGES and not from_stdlib(module):
            continue
        out.setdefault(module_key(key, module), module)
    return out


def is_dunder(name: str) -> bool:
    return len(name) > 4 and name.startswith("__") and name.endswith("__")


def module_items(module: types.ModuleType) -> list[tuple[str, Any]]:
    try:
        return sorted((k, v) for k, v in list(vars(module).items()) if isinstance(k, str))
    except Exception:  # noqa: BLE001
        return []


# --------------------------------------------------------------------------------------------------
# (a) springboards
# --------------------------------------------------------------------------------------------------


def target_name(module: types.ModuleType) -> str | None:
    name = vars(module).get("__name__")
    if not isinstance(name, str):
        return None
    if sys.modules.get(name) is module:
        return name
    for key, other in sys.modules.items():  # a module whose __name__ lies (``_io`` says ``io``)
        if other is module:
            return key
    return name


def build_springboards(modules: dict[str, types.ModuleType]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for key, module in modules.items():
        attrs = {}
        for attr, value in module_items(module):
            if is_dunder(attr) or not issubclass(type(value), types.ModuleType):
                continue
            target = target_name(value)
            if target is not None:
                attrs[attr] = target
        if attrs:
            out[key] = dict(sorted(attrs.items()))
    return dict(sorted(out.items()))


def canonicalise(module: str, name: str, springboards: dict[str, dict[str, str]]) -> tuple[str, str]:
    """Follow springboards the way ``picklewarden.knowledge.resolve`` does: ``torch._utils`` +
    ``torch.channels_last`` -> ``torch`` + ``channels_last``."""
    parts = name.split(".")
    path: list[str] = []
    for part in parts[:-1]:
        target = springboards.get(module, {}).get(part) if not path else None
        if target is not None:
            module = target
        else:
            path.append(part)
    path.append(parts[-1])
    return module, ".".join(path)


# --------------------------------------------------------------------------------------------------
# Static attribute lookup (never calls descriptors, __getattr__ or properties)
# --------------------------------------------------------------------------------------------------


def static_mro(cls: type) -> tuple[type, ...]:
    try:
        mro = type.__dict__["__mro__"].__get__(cls)
        return tuple(mro) if isinstance(mro, tuple) else (cls,)
    except Exception:  # noqa: BLE001
        return (cls,)


def class_lookup(cls: type, name: str, start_after: type | None = None) -> Any:
    mro = static_mro(cls)
    if start_after is not None and start_after in mro:
        mro = mro[mro.index(start_after) + 1 :]
    for klass in mro:
        try:
            value = type.__dict__["__dict__"].__get__(klass).get(name, MISSING)
        except Exception:  # noqa: BLE001
            continue
        if value is not MISSING:
            return value
    return MISSING


def instance_dict(obj: Any) -> dict[str, Any]:
    try:
        value = object.__getattribute__(obj, "__dict__")
    except Exception:  # noqa: BLE001
        return {}
    return value if type(value) is dict else {}


def static_getattr(obj: Any, name: str) -> Any:
    if issubclass(type(obj), types.ModuleType):
        try:
            return vars(obj).get(name, MISSING)
        except Exception:  # noqa: BLE001
            return MISSING
    if issubclass(type(obj), type):
        return class_lookup(obj, name)
    value = instance_dict(obj).get(name, MISSING)
    if value is MISSING:
        value = class_lookup(type(obj), name)
    return value


def resolve_dotted(module: types.ModuleType, qualname: str) -> Any:
    obj: Any = module
    for part in qualname.split("."):
        obj = static_getattr(obj, part)
        if obj is MISSING:
            return MISSING
    return obj


def split_dotted(dotted: str) -> tuple[str, str] | None:
    """Split ``a.b.C.d`` at its longest importable module prefix."""
    parts = dotted.split(".")
    for i in range(len(parts) - 1, 0, -1):
        candidate = ".".join(parts[:i])
        module = sys.modules.get(candidate)
        if module is None and in_domain(candidate):
            try:
                import importlib.util

                if importlib.util.find_spec(candidate) is not None:
                    module = guarded_import(candidate)
            except Exception:  # noqa: BLE001
                module = None
        if module is not None:
            return candidate, ".".join(parts[i:])
    return None
