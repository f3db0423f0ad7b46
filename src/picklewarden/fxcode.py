"""Judging a pickled ``torch.fx.GraphModule`` by the code it carries.

``torch.fx.graph_module.reduce_graph_module(body, import_block)`` (and its ``torch.package``/deploy twin)
runs ``exec`` on ``import_block + body["_code"]``: Python source stored in the pickle. Knowledge calls it a
code-execution sink, which it is; but every traced model is saved this way, and what runs is only what the
pickle holds. So the source is reviewed with :func:`picklewarden.codereview.fx_review`: code as ``torch.fx``
generates it (a ``forward`` over submodules and torch ops, imports of torch and math) is not a finding;
anything else keeps the code-execution finding, with the offending lines as evidence. When the arguments
are not plain values the pickle built itself (the code would be computed at load time), nothing changes.
"""

from __future__ import annotations

from picklewarden._typing import TYPE_CHECKING
from picklewarden.pickle.machine import node_of
from picklewarden.pickle.program import CallHow, CallResult, Global

if TYPE_CHECKING:
    from collections.abc import Iterable

    from picklewarden.model import Finding
    from picklewarden.rules import ProgramJudge

_REDUCERS: dict[str, tuple[int, int]] = {
    "torch.fx.graph_module.reduce_graph_module": (0, 1),
    "torch.fx.graph_module.reduce_deploy_graph_module": (1, 2),
}
"""Symbol -> (index of ``body``, index of ``import_block``) among the call's arguments."""
_SHOWN = 3
_DEFAULT_TRACER = "torch.fx._symbolic_trace.Tracer"
"""What ``symbolic_trace`` stores as ``body["_tracer_cls"]``; the reducer subclasses it to re-trace the code."""


def _source(call: CallResult, where: tuple[int, int]) -> str | None:
    """The source ``exec`` runs for a reducer call, or None when its arguments are not plain values."""
    body_at, block_at = where
    if call.how is not CallHow.CALL or call.kwargs or len(call.args) <= max(body_at, block_at):
        return None
    body, block = call.args[body_at], call.args[block_at]
    if type(body) is not dict or type(block) is not str:
        return None
    code = body.get("_code") or body.get("code")  # torch reads body.get("_code") or body["code"]
    return block + code if type(code) is str else None


def rejudge(judge: ProgramJudge, findings: Iterable[Finding]) -> list[Finding]:
    """``findings`` with each GraphModule reducer call judged by the source it runs."""
    calls: dict[tuple[int | None, str], CallResult] = {}
    tracers: set[int | None] = set()
    # Judged per imported global, then only the calls of a reducer are looked at (a state dict has 100k calls).
    reducers = {g.id: symbol for g in judge.globals if (symbol := judge.knowledge(g)[0].symbol) in _REDUCERS}
    if not reducers:
        return list(findings)
    for stmt in judge.program.kinds().others:
        if isinstance(stmt, CallResult) and isinstance(stmt.callee, Global):
            reducer = reducers.get(stmt.callee.id)
            if reducer is not None:
                calls.setdefault((stmt.offset, reducer), stmt)
                tracers.update(_default_tracer(judge, stmt, _REDUCERS[reducer][0]))
    if not calls:
        return list(findings)
    from picklewarden import codereview  # here: only a pickled GraphModule needs the source reviewer (ast)

    out: list[Finding] = []
    for item in findings:
        if item.rule == "PW200" and item.symbol == _DEFAULT_TRACER and item.offset in tracers:
            continue  # torch's own tracer, handed to the reducer exactly as symbolic_trace stores it
        call = calls.get((item.offset, item.symbol)) if item.rule == "PW101" else None
        source = _source(call, _REDUCERS[item.symbol]) if call is not None else None
        issues = codereview.fx_review(source) if source is not None else None
        if issues is None:
            out.append(item)
        elif issues:
            shown = "; ".join(f"line {i.line} `{i.text}`: {i.why}" for i in issues[:_SHOWN])
            more = f" (and {len(issues) - _SHOWN} more)" if len(issues) > _SHOWN else ""
            message = f"{item.message}; the code is not what torch.fx generates: {shown}{more}"
            out.append(item._replace(message=message))
        # else: generated FX code, a forward over submodules and torch ops: nothing runs but the model
    return out


def _default_tracer(judge: ProgramJudge, call: CallResult, body_at: int) -> set[int | None]:
    """Offset of the import of torch's default tracer when it is what the reducer's body names."""
    body = call.args[body_at] if len(call.args) > body_at else None
    tracer = node_of(body.get("_tracer_cls")) if type(body) is dict else None
    if isinstance(tracer, Global) and judge.knowledge(tracer)[0].symbol == _DEFAULT_TRACER:
        return {tracer.offset}
    return set()
