"""Keras model configs (``config.json`` in a ``.keras`` ZIP, ``model_config`` in a legacy ``.h5``).

What loading a config can run:
- ``Lambda`` layers (and any ``__lambda__`` object) carry ``marshal``-ed bytecode that Keras turns back into
  a function: malicious, with the bytecode disassembled (never loaded) as evidence.
- Objects are located by ``module`` + ``class_name`` (or a ``registered_name``); Keras releases before the
  fixes for CVE-2025-1550 imported any module named there, even in safe mode. A callable outside Keras'
  namespace is judged like a pickle global. Inside it, the few Keras APIs that are not modeling objects
  (file download, saving, turning safe mode off) are dangerous whatever the release.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator

from picklewarden._typing import TYPE_CHECKING
from picklewarden.containers.base import Anomaly
from picklewarden.formats import bytecode, callables
from picklewarden.model import Severity

if TYPE_CHECKING:
    from typing import Any, Final

_KERAS_PACKAGES: Final = frozenset({"keras", "keras_hub", "keras_cv", "keras_nlp", "tf_keras"})
_MAX_OBJECTS: Final = 200_000

# Keras' own APIs that are not modeling objects, by their public name: what each does when a config names
# it. Keras itself refuses these since 3.9 (NON_MODELING_APIS); earlier releases call them.
_NON_MODELING: Final[dict[str, tuple[str, str]]] = {
    "get_file": ("PW105", "downloads a URL to the local disk (keras.utils.get_file)"),
    "load_model": ("PW103", "loads another model file"),
    "model_from_json": ("PW103", "deserializes another model config"),
    "deserialize_keras_object": ("PW103", "deserializes another Keras object"),
    "load_weights": ("PW104", "reads a weights file at a path chosen by the config"),
    "save_model": ("PW104", "writes a model file at a path chosen by the config"),
    "save_weights": ("PW104", "writes a weights file at a path chosen by the config"),
    "save_img": ("PW104", "writes an image file at a path chosen by the config"),
    "load_img": ("PW104", "reads an image file at a path chosen by the config"),
    "enable_unsafe_deserialization": ("PW107", "turns Keras safe mode off for the rest of the process"),
    "register_keras_serializable": ("PW107", "registers objects in Keras' global registry"),
    "clear_session": ("PW107", "resets Keras' global state"),
}


def is_config(value: object) -> bool:
    """A Keras model config: a ``class_name``/``config`` object (a model or a layer)."""
    return isinstance(value, dict) and isinstance(value.get("class_name"), str) and "config" in value


def review(config: object, where: str, member: str | None = None) -> list[Anomaly]:
    """Findings for a parsed Keras config (``where`` names it in messages)."""
    found: list[Anomaly] = []
    seen: set[str] = set()
    for node in _objects(config):
        class_name = node.get("class_name")
        inner = node.get("config")
        if class_name == "__lambda__" and isinstance(inner, dict):
            code = inner.get("code")
            if code is None and isinstance(inner.get("value"), list) and inner["value"]:
                code = inner["value"][0]
            found.append(_lambda(code, where, member))
        elif class_name == "Lambda" and isinstance(inner, dict) and inner.get("function_type") == "lambda":
            function = inner.get("function")
            code = function[0] if isinstance(function, list) and function else function
            found.append(_lambda(code, where, member))
        module = node.get("module")
        if isinstance(module, str) and isinstance(class_name, str) and class_name != "__lambda__":
            name = inner if class_name == "function" and isinstance(inner, str) else class_name
            target = f"{module}.{name}"
            if target not in seen:
                seen.add(target)
                item = _named(module, name, where, member, node)
                if item is not None:
                    found.append(item)
    return found


def _objects(config: object) -> Iterator[dict[str, Any]]:
    """Every object (dict) in the config, iteratively and bounded."""
    stack = [config]
    count = 0
    while stack and count < _MAX_OBJECTS:
        value = stack.pop()
        count += 1
        if isinstance(value, dict):
            if "class_name" in value:
                yield value
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)


def _lambda(code: object, where: str, member: str | None) -> Anomaly:
    message = f"{where}: a Lambda layer carries Python bytecode that keras.models.load_model runs"
    try:
        raw = base64.b64decode(str(code).encode("ascii"), validate=False)
        evidence = "\n".join(bytecode.listing(bytecode.decode(raw)))
    except (binascii.Error, UnicodeEncodeError, ValueError, bytecode.MarshalError) as exc:
        evidence = f"(bytecode not decoded: {exc})"
    return Anomaly("PW400", member, None, message, evidence=evidence[:4000])


def _named(module: str, name: str, where: str, member: str | None, node: dict[str, Any]) -> Anomaly | None:
    evidence = f'"module": {module!r}, "class_name": {node.get("class_name")!r}'
    registered = node.get("registered_name")
    if isinstance(registered, str):
        evidence += f', "registered_name": {registered!r}'
    if module.split(".", 1)[0] in _KERAS_PACKAGES:
        danger = _NON_MODELING.get(name)
        if danger is None:
            return None  # Keras' own layers, losses, activations...: resolved by Keras, never imported freely
        rule, why = danger
        message = f"{where} names {module}.{name}, a Keras API that is not a modeling object: it {why}"
        return Anomaly(rule, member, None, message, evidence=evidence, symbol=f"{module}.{name}")
    judged = callables.judge(f"{module}.{name}")
    return callables.anomaly(
        judged,
        how="makes Keras import",
        where=where,
        member=member,
        evidence=evidence,
        unknown_severity=Severity.INFO,
    )
