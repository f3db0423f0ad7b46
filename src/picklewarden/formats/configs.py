"""Configs that name code: Hydra/OmegaConf YAML and JSON, PyYAML python tags, Keras and transformers JSON.

YAML is only *composed* (PyYAML's SafeLoader builds the node graph and resolves tags, constructing
nothing); tags and ``_target_`` values are read off the nodes. Aliases share nodes, so an alias bomb is
walked once. A callable named by ``_target_`` (what ``hydra.utils.instantiate`` imports and calls, also with
``_partial_: true`` or ``_call_: false``) or by a python tag is judged like a pickle global.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

from picklewarden._typing import TYPE_CHECKING
from picklewarden.containers.base import Anomaly, Data, Opened
from picklewarden.formats import callables, keras, templates
from picklewarden.model import Severity

if TYPE_CHECKING:
    from typing import Any, Final

MAX_TEXT: Final = 64 * 1024 * 1024
"""Largest config parsed; a larger one is an error (its contents were not seen)."""
MAX_YAML: Final = 8 * 1024 * 1024
"""PyYAML's pure-Python parser (the one yaml.unsafe_load uses) is slow; configs are kilobytes."""
_MAX_NODES: Final = 2_000_000
_PYTHON_TAG: Final = "tag:yaml.org,2002:python/"
_VALUE_TAGS: Final = frozenset("none bool str unicode bytes int long float complex list tuple dict".split())
"""Python tags that build plain values: harmless, though only unsafe loaders accept them."""
_CALLING_TAGS: Final = {"object": "instantiates", "object/new": "instantiates", "object/apply": "calls"}
_IMPORTING_TAGS: Final = frozenset({"name", "module"})
YAML_MISSING = "not reviewed: PyYAML is not installed (pip install 'picklewarden[formats]')"


def as_text(data: Data) -> str | None:
    """The file as text, or None when it is too large, binary, or not UTF-8."""
    if len(data) > MAX_TEXT:
        return None
    raw = bytes(data)
    if b"\x00" in raw:
        return None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None


def parse_json(text: str) -> object:
    """The JSON value, or None when the text is not JSON."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def open_json(value: dict[str, Any], name: str, folder: str = "") -> Opened:
    """A JSON object: Keras model configs, transformers configs (auto_map, chat templates), Hydra-style
    ``_target_`` entries. Plain JSON is data; nothing in it runs."""
    from picklewarden.formats import remote_code

    opened = Opened("keras-config" if keras.is_config(value) else "json")
    where = "the Keras config" if keras.is_config(value) else "the JSON config"
    if keras.is_config(value):
        opened.anomalies.extend(keras.review(value, where))
    opened.anomalies.extend(remote_code.review(value, name, folder))
    for path, node in _json_objects(value):
        target = node.get("_target_")
        if isinstance(target, str):
            item = target_anomaly(target, node, where, f'{path}"_target_": {target!r}')
            if item is not None:
                opened.anomalies.append(item)
    _templates(value, opened)
    return opened


def _json_objects(value: object) -> Iterator[tuple[str, dict[str, Any]]]:
    stack: list[tuple[str, object]] = [("", value)]
    count = 0
    while stack and count < _MAX_NODES:
        path, node = stack.pop()
        count += 1
        if isinstance(node, dict):
            yield path, node
            stack.extend((f"{path}{k}.", v) for k, v in node.items() if isinstance(v, (dict, list)))
        elif isinstance(node, list):
            stack.extend((path, v) for v in node if isinstance(v, (dict, list)))


def _templates(value: dict[str, Any], opened: Opened) -> None:
    """transformers' ``tokenizer_config.json`` chat templates: one string, or a list of named ones."""
    entry = value.get("chat_template")
    found: list[tuple[str, object]] = [("chat_template", entry)] if isinstance(entry, str) else []
    if isinstance(entry, list):
        found = [(f"chat_template {t.get('name')!r}", t.get("template")) for t in entry if isinstance(t, dict)]
    for key, text in found:
        if isinstance(text, str):
            review = templates.review(text, key)
            opened.anomalies.extend(review.anomalies)
            if review.error is not None:
                opened.errors.append(f"{key}: {review.error}")


def target_anomaly(target: str, node: dict[str, Any], where: str, evidence: str) -> Anomaly | None:
    """The finding for a Hydra ``_target_``, judged like a pickle global."""
    how = "instantiates"
    if node.get("_partial_") is True or node.get("_partial_") == "true":
        how = "wraps in functools.partial (called later by the code that uses the config)"
    elif node.get("_call_") is False or node.get("_call_") == "false":
        how = "imports"
    if "${" in target:
        # OmegaConf resolves interpolations first: the callable is chosen when the config is instantiated.
        message = f"{where} {how} (_target_) a callable computed at instantiation ({target!r}): not reviewable"
        return Anomaly("PW402", None, None, message, Severity.MEDIUM, evidence=evidence)
    return callables.anomaly(
        callables.judge(target), how=f"{how} (_target_)", where=where, member=None, evidence=evidence
    )


def open_yaml(text: str) -> Opened:
    opened = Opened("yaml")
    if len(text) > MAX_YAML:
        opened.errors.append(f"{len(text)}-character YAML not reviewed (larger than {MAX_YAML})")
        return opened
    try:
        import yaml  # type: ignore[import-not-found,import-untyped,unused-ignore]
    except ImportError:
        opened.errors.append(YAML_MISSING)
        return opened
    try:
        for document in yaml.compose_all(text, Loader=yaml.SafeLoader):
            if document is not None:
                _review_yaml(document, opened)
    except yaml.YAMLError as exc:
        opened.errors.append(f"YAML does not parse past this point: {exc}")
    except RecursionError:
        opened.errors.append("YAML nests too deeply to parse")
    return opened


def _review_yaml(root: Any, opened: Opened) -> None:
    import yaml  # type: ignore[import-not-found,import-untyped,unused-ignore]

    seen: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if len(seen) > _MAX_NODES:
            opened.errors.append(f"YAML has more than {_MAX_NODES} nodes; the rest was not reviewed")
            return
        line = f"line {node.start_mark.line + 1}"
        tag = node.tag or ""
        if tag.startswith(_PYTHON_TAG):
            opened.anomalies.append(_python_tag(tag[len(_PYTHON_TAG) :], line))
        if isinstance(node, yaml.MappingNode):
            pairs = [(k, v) for k, v in node.value]
            flags = {
                k.value: v.value for k, v in pairs if isinstance(k, yaml.ScalarNode) and isinstance(v, yaml.ScalarNode)
            }
            target = flags.get("_target_")
            if isinstance(target, str):
                found = target_anomaly(target, flags, "the YAML config", f"{line}: _target_: {target}")
                if found is not None:
                    opened.anomalies.append(found)
            for key, value in pairs:
                stack.extend((key, value))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)


def _python_tag(suffix: str, line: str) -> Anomaly:
    kind, _, name = suffix.partition(":")
    evidence = f"{line}: !!python/{suffix}"
    if kind in _VALUE_TAGS:
        message = f"the YAML uses the value tag !!python/{kind}, which only unsafe loaders accept"
        return Anomaly("PW401", None, None, message, Severity.INFO, evidence=evidence)
    how = _CALLING_TAGS.get(kind, "imports")
    if kind not in _CALLING_TAGS and kind not in _IMPORTING_TAGS:
        message = f"the YAML uses the unknown python tag !!python/{kind}"
        return Anomaly("PW401", None, None, message, evidence=evidence)
    judged = callables.judge(f"{name}.<module>" if kind == "module" else name)
    where = f"the YAML tag !!python/{kind} (run by yaml.unsafe_load)"
    item = callables.anomaly(
        judged, how=how, where=where, member=None, evidence=evidence, unknown_rule="PW401", unknown_severity=None
    )
    if item is None:
        message = f"{where} {how} {judged.resolved.display}, known safe; only unsafe loaders accept the tag"
        return Anomaly("PW401", None, None, message, Severity.LOW, evidence=evidence)
    return item
