"""Jinja templates (GGUF chat templates, ``tokenizer_config.json`` chat templates) reviewed by parsing.

The template is parsed with Jinja's own parser and never rendered. Every way out of a template into Python
goes through an attribute or item whose name starts with ``_`` (``__class__``, ``__globals__``,
``__subclasses__``, ``_TemplateReference__context``...): Jinja's sandbox refuses exactly those, and the
unsandboxed environments of affected runtimes (CVE-2024-34359) allow them. Such an access is malicious, with
the template line as evidence; an attribute name computed at render time (``|attr(x)``) or a format string
that walks attributes is reported too. jinja2 is an optional extra: without it, a template is an error.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from picklewarden._typing import TYPE_CHECKING
from picklewarden.containers.base import Anomaly
from picklewarden.model import Severity

if TYPE_CHECKING:
    from typing import Any

MAX_TEMPLATE = 1 << 20
"""Characters parsed per template: chat templates are a few kilobytes."""
MISSING = "not reviewed: jinja2 is not installed (pip install 'picklewarden[formats]')"


@dataclass
class Review:
    anomalies: list[Anomaly] = field(default_factory=list)
    error: str | None = None


def _environment() -> Any:
    import jinja2  # type: ignore[import-not-found,import-untyped,unused-ignore]
    from jinja2 import ext, nodes  # type: ignore[import-not-found,import-untyped,unused-ignore]

    class Generation(ext.Extension):  # type: ignore[misc,unused-ignore]
        """transformers' ``{% generation %}`` block: parsed to its body so the body is reviewed too."""

        tags = {"generation"}  # noqa: RUF012 - jinja2 declares it a plain set

        def parse(self, parser: Any) -> Any:
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return nodes.Scope(body, lineno=lineno)

    # The extensions chat-template runtimes enable, so that templates they accept parse here. Classes, not
    # dotted names: jinja2 would import names at scan time, and the scan never imports by computed name.
    return jinja2.Environment(extensions=[ext.LoopControlExtension, ext.ExprStmtExtension, Generation])


def review(source: str, where: str, member: str | None = None) -> Review:
    """Findings for one template string (``where`` names it in messages)."""
    if len(source) > MAX_TEMPLATE:
        return Review(error=f"{len(source)}-character template not reviewed (larger than {MAX_TEMPLATE})")
    try:
        environment = _environment()
        from jinja2 import TemplateSyntaxError, nodes  # type: ignore[import-not-found,import-untyped,unused-ignore]
    except ImportError:
        return Review(error=MISSING)
    try:
        tree = environment.parse(source)
    except TemplateSyntaxError as exc:
        return Review(error=f"template does not parse ({exc}); not reviewed")
    except RecursionError:
        return Review(error="template nests too deeply to parse; not reviewed")
    lines = source.splitlines()
    out = Review()
    for node in tree.find_all((nodes.Getattr, nodes.Getitem, nodes.Filter)):
        name: object = None
        computed = False
        if isinstance(node, nodes.Getattr):
            name = node.attr
            inner = node.node
            if name in ("format", "format_map") and isinstance(inner, nodes.Const) and "_" in str(inner.value):
                name = f"{name} of {inner.value!r}"
                _add(out, node, lines, where, member, f"formats a string that walks attributes ({name})")
                continue
        elif isinstance(node, nodes.Getitem):
            if isinstance(node.arg, nodes.Const):
                name = node.arg.value
        elif node.name == "attr" and node.args:
            if isinstance(node.args[0], nodes.Const):
                name = node.args[0].value
            else:
                computed = True
        if computed:
            message = "reads an attribute whose name is computed while rendering (|attr)"
            _add(out, node, lines, where, member, message, Severity.MEDIUM)
        elif isinstance(name, str) and name.startswith("_"):
            _add(out, node, lines, where, member, f"reaches the Python internal attribute {name!r}")
    return out


def _add(
    out: Review, node: Any, lines: list[str], where: str, member: str | None, what: str, level: Severity | None = None
) -> None:
    lineno = getattr(node, "lineno", 0) or 0
    line = lines[lineno - 1].strip() if 0 < lineno <= len(lines) else ""
    evidence = f"line {lineno}: {line[:500]}"
    out.anomalies.append(Anomaly("PW403", member, None, f"{where} {what}", level, evidence=evidence))
