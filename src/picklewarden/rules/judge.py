"""The checks that turn a program into findings."""

from __future__ import annotations

import functools
from functools import partial

from picklewarden._typing import TYPE_CHECKING
from picklewarden.containers import nested
from picklewarden.indicators import extract
from picklewarden.knowledge.joblib_compat import WRAPPERS, sibling_loads
from picklewarden.knowledge.launder import Helped, Launderer, module_pids
from picklewarden.knowledge.resolve import Resolved, classify, resolve
from picklewarden.knowledge.tables import Category, Knowledge
from picklewarden.model import Finding, Indicator, Severity
from picklewarden.pickle.machine import node_of
from picklewarden.pickle.program import CallHow, CallResult, Global, Mutation, Node, Op, Persistent, Program
from picklewarden.pickle.pure import UNRESOLVED_MODULE
from picklewarden.rules.catalog import RULE_FOR_CATEGORY, error_finding, finding

if TYPE_CHECKING:
    from collections.abc import Iterator

    from picklewarden.limits import Limits
    from picklewarden.pickle.decompile import Decompiler


def _knowledge(cache: dict[int, tuple[Resolved, Knowledge | None]], node: Global) -> tuple[Resolved, Knowledge | None]:
    """What a global resolves to and what is known of it, cached by node id."""
    cached = cache.get(node.id)
    if cached is None:
        resolved = resolve(node.module, node.name, node.protocol)
        cached = (resolved, classify(resolved))
        cache[node.id] = cached
    return cached


def _resolution(cache: dict[int, tuple[Resolved, Knowledge | None]], node: Global) -> Resolved:
    return _knowledge(cache, node)[0]


class ProgramJudge:
    """Judges one program. Resolution results are cached per Global node."""

    def __init__(self, program: Program, limits: Limits) -> None:
        self.program = program
        self.limits = limits
        self._resolved: dict[int, tuple[Resolved, Knowledge | None]] = {}
        # Not a closure over self: that cycle would keep the whole program alive until a cyclic collection.
        self.launderer = Launderer(partial(_resolution, self._resolved))
        self._callees: set[int] | None = None
        self._globals: list[Global] | None = None

    @functools.cached_property
    def decompiler(self) -> Decompiler:
        """Made on first use: only findings show decompiled evidence, and naming every global walks all the
        statements (a clean state dict of 100k tensors needs none of it). Imported here too: the decompiler
        builds on ``ast``, which a clean file's scan need not load."""
        from picklewarden.pickle.decompile import Decompiler

        return Decompiler(self.program, self.limits)

    @property
    def globals(self) -> list[Global]:
        """The program's imports, in order (one pass over the statements, shared by every check)."""
        if self._globals is None:
            self._globals = self.program.globals
        return self._globals

    def callees(self) -> set[int]:
        """Nodes the pickle itself calls: a helper's result is judged where it is called, if it is. (Elided
        calls are left out: their callees are globals, never a helper's result.)"""
        if self._callees is None:
            statements = self.program.kinds().others
            self._callees = {
                s.callee.id for s in statements if isinstance(s, CallResult) and isinstance(s.callee, Node)
            }
        return self._callees

    def knowledge(self, node: Global) -> tuple[Resolved, Knowledge | None]:
        return _knowledge(self._resolved, node)

    def findings(self) -> Iterator[Finding]:
        program, member = self.program, self.program.member
        reported_unknown: set[str] = set()
        # Old joblib array wrappers are judged by the file they make joblib.load read, not by name.
        called = {g.id for g in self.globals if self._key(g) in WRAPPERS}
        yield from self._sibling_loads(bool(called))
        kinds = program.kinds()
        for stmt in kinds.others:
            if isinstance(stmt, CallResult):
                callee = stmt.callee
                if isinstance(callee, Global):
                    if callee.id not in called:
                        called.add(callee.id)
                        yield from self._call_of_global(stmt, callee, reported_unknown, called)
                else:
                    yield from self._indirect_call(stmt)
            elif isinstance(stmt, Mutation) and isinstance(stmt.target, Global):
                if stmt.op in (Op.BUILD, Op.SETATTR, Op.SETITEM):
                    resolved = self.knowledge(stmt.target)[0]
                    yield finding(
                        "PW107",
                        f"modifies the imported global {resolved.display}",
                        member=member,
                        offset=stmt.offset,
                        evidence=self._evidence(stmt.target, stmt),
                        symbol=resolved.symbol,
                    )
        # Apart from the rest (findings are sorted by offset later): a state dict has one per tensor.
        for pid in module_pids(kinds.persistent):  # only such an id hands the pickle anything
            yield from self._legacy_module_pid(pid)
        elided: set[int] | None = None
        for stmt in self.globals:
            if stmt.id not in called:
                known = self.knowledge(stmt)[1]
                if known is not None and known.category is Category.SAFE:
                    continue  # nothing to say about a safe global, called or not
                if elided is None:
                    elided = {call.callee.id for call in program.elided}
                if stmt.id not in elided:  # a global a lean recording elided calls of is called
                    yield from self._imported_only(stmt, reported_unknown)
        for offset, code in program.extensions:
            yield finding(
                "PW108",
                f"uses copyreg extension code {code}: it imports whatever the loading "
                "process registered under that number",
                member=member,
                offset=offset,
                evidence=f"_ext = copyreg_extension({code})",
            )
        if program.error is not None:
            yield error_finding(program.error, member)

    def _key(self, node: Global) -> tuple[str, str]:
        resolved = self.knowledge(node)[0]
        return resolved.module, resolved.qualname

    def _sibling_loads(self, imported: bool) -> Iterator[Finding]:
        loads = list(sibling_loads(self.program, lambda g: self.knowledge(g)[0])) if imported else []
        for load in loads:
            plain = load.plain_sibling
            where = "beside this file" if plain else "outside this file's directory"
            yield finding(
                "PW103",
                f"joblib.load reads {load.filename!r} {where} for {load.wrapper.symbol} with "
                "numpy.load(allow_pickle=True): that file is not in this one and was not scanned",
                member=self.program.member,
                offset=load.offset,
                symbol=load.wrapper.symbol,
                severity=Severity.MEDIUM if plain else None,
            )
        if imported and not loads:
            yield finding(
                "PW200",
                "imports an old joblib array wrapper, which makes joblib.load read a file beside this one",
                member=self.program.member,
                symbol=next(self.knowledge(g)[0].symbol for g in self.globals if self._key(g) in WRAPPERS),
            )

    def _decoded(self, args: tuple[object, ...], category: Category) -> tuple[Indicator, ...]:
        """Source or a command the pickle decodes at load time (``exec(codecs.decode(s, 'rot13'))``), shown
        decoded: the responder sees what runs, not the wrapping."""
        if category not in (Category.CODE, Category.PROCESS):
            return ()
        kind = "code" if category is Category.CODE else "command"
        found = []
        for arg in args[:2]:
            decoded = nested.evaluate(arg, lambda g: self.knowledge(g)[0].symbol) if node_of(arg) else None
            if decoded is not None and decoded.steps:
                text = decoded.data.decode("latin-1")
                found.append(Indicator(kind, text if len(text) <= 200 else text[:200] + "..."))
        return tuple(found)

    def _legacy_module_call(
        self, call: CallResult, target: Resolved, known: Knowledge | None, evidence: str
    ) -> Iterator[Finding]:
        """A call of the class a legacy ``('module', cls, ...)`` persistent id handed back: a call of ``cls``."""
        if known is not None and known.category is Category.SAFE:
            return
        how = "instantiates" if call.how is CallHow.NEW else "calls"
        rule = "PW201" if known is None else RULE_FOR_CATEGORY[known.category]
        reason = "unknown global" if known is None else known.reason
        yield finding(
            rule,
            f"{how} {target.display}, handed back by a legacy torch ('module', ...) persistent id: {reason}",
            member=self.program.member,
            offset=call.offset,
            evidence=evidence,
            symbol=target.symbol,
            indicators=extract(call.args, command=known is not None and known.category is Category.PROCESS),
        )

    def _legacy_module_pid(self, pid: Persistent) -> Iterator[Finding]:
        """A legacy ``('module', cls, ...)`` persistent id hands ``cls`` to the pickle: judged as what it is."""
        target = self.launderer.ref(pid)
        known = classify(target) if isinstance(target, Resolved) else None
        if target is None or known is None or known.category is Category.SAFE:
            return
        assert isinstance(target, Resolved)
        yield finding(
            RULE_FOR_CATEGORY[known.category],
            f"a legacy torch ('module', ...) persistent id hands {target.display} to the pickle: {known.reason}",
            member=self.program.member,
            offset=pid.offset,
            evidence=self._evidence(pid),
            symbol=target.symbol,
        )

    def _computed_name(self, node: Global) -> Finding:
        """A global named by a call result the machine could not compute (pure.py): no table can vouch for
        what the victim's unpickler imports there, and the pickler never computes a name."""
        resolved = self.knowledge(node)[0]
        return finding(
            "PW102",
            f"imports {resolved.display}, a name a call computes while loading: the real unpickler imports "
            "whatever that call returns",
            member=self.program.member,
            offset=node.offset,
            evidence=self._evidence(node),
            symbol=resolved.symbol,
        )

    def _evidence(self, *stmts: Global | CallResult | Mutation | Persistent) -> str:
        return "\n".join(self.decompiler.render(s) for s in stmts)

    def _call_of_global(
        self, call: CallResult, callee: Global, reported: set[str], called: set[int]
    ) -> Iterator[Finding]:
        resolved, known = self.knowledge(callee)
        member = self.program.member
        if callee.module == UNRESOLVED_MODULE:
            yield self._computed_name(callee)
            return
        if known is not None and known.category is Category.SAFE:
            return
        if known is not None and known.category is Category.INDIRECTION and call.how is not CallHow.SETSTATE:
            helped = self.launderer.helped(call, resolved)
            if helped is not None:
                if helped.consumed is not None:
                    called.add(helped.consumed.id)  # judged through the helper's target, not on its own
                yield from self._helped(call, callee, helped, reported)
                return
        how = {CallHow.CALL: "calls", CallHow.NEW: "instantiates", CallHow.SETSTATE: "calls"}[call.how]
        route = " through a __setstate__ planted by an earlier BUILD" if call.how is CallHow.SETSTATE else ""
        evidence = self._evidence(callee, call)
        if known is None:
            if resolved.symbol in reported:
                return
            reported.add(resolved.symbol)
            yield finding(
                "PW201",
                f"{how} unknown global {resolved.display}{route}",
                member=member,
                offset=call.offset,
                evidence=evidence,
                symbol=resolved.symbol,
                indicators=extract(call.args, command=False),
            )
            return
        yield finding(
            RULE_FOR_CATEGORY[known.category],
            f"{how} {resolved.display}{route}: {known.reason}",
            member=member,
            offset=call.offset,
            evidence=evidence,
            symbol=resolved.symbol,
            indicators=extract(call.args, command=known.category is Category.PROCESS)
            + self._decoded(call.args, known.category),
        )
        if call.how is CallHow.SETSTATE:
            yield finding(
                "PW106",
                f"BUILD calls {resolved.display} as a planted __setstate__",
                member=member,
                offset=call.offset,
                evidence=evidence,
                symbol=resolved.symbol,
            )

    def _helped(self, call: CallResult, callee: Global, helped: Helped, reported: set[str]) -> Iterator[Finding]:
        """A helper call judged by what it wraps: nothing when that is safe or data, the target's own
        danger when it is a sink, unknown when it is unknown."""
        target = helped.target
        known = classify(target) if target is not None else None
        if target is None or (known is not None and known.category is Category.SAFE):
            return
        message = helped.helper.format(target.display)
        evidence = self._evidence(callee, call)
        if known is None:
            if target.symbol in reported or (call.id in self.callees() and not helped.calls_now):
                return  # reported once; a result the pickle calls is judged where it is called
            reported.add(target.symbol)
            yield finding(
                "PW201" if helped.calls_now else "PW200",
                f"{message}: unknown global",
                member=self.program.member,
                offset=call.offset,
                evidence=evidence,
                symbol=target.symbol,
            )
            return
        yield finding(
            RULE_FOR_CATEGORY[known.category],
            f"{message}: {known.reason}",
            member=self.program.member,
            offset=call.offset,
            evidence=evidence,
            symbol=target.symbol,
            indicators=extract(call.args[1:], command=known.category is Category.PROCESS),
        )

    def _indirect_call(self, call: CallResult) -> Iterator[Finding]:
        member = self.program.member
        if call.how is CallHow.SETSTATE:
            what = "a __setstate__ planted by an earlier BUILD"
        elif isinstance(call.callee, CallResult):
            what = "a value returned by another call"
        else:
            what = "a persistent-id object"
        evidence = self._evidence(call)
        target = self.launderer.called(call)
        known = classify(target) if target is not None else None
        if isinstance(call.callee, Persistent) and target is not None:
            yield from self._legacy_module_call(call, target, known, evidence)
            return
        if target is not None and call.how is not CallHow.SETSTATE and isinstance(call.callee, CallResult):
            # The value was built by helpers each judged where they were called (getattr on a global,
            # partial...), so calling it is calling its target, judged as that global would be.
            if known is not None and known.category is Category.SAFE:
                return
            if known is None:
                yield finding(
                    "PW201",
                    f"calls unknown global {target.display} reached through {what}",
                    member=member,
                    offset=call.offset,
                    evidence=evidence,
                    symbol=target.symbol,
                    indicators=extract(call.args, command=False),
                )
                return
        if target is not None and known is not None and known.category is not Category.SAFE:
            yield finding(
                RULE_FOR_CATEGORY[known.category],
                f"calls {target.display} reached through {what}: {known.reason}",
                member=member,
                offset=call.offset,
                evidence=evidence,
                symbol=target.symbol,
                indicators=extract(call.args, command=known.category is Category.PROCESS),
            )
        reached = f" (resolves to {target.symbol})" if target is not None else ""
        yield finding(
            "PW106",
            f"calls {what}{reached}",
            member=member,
            offset=call.offset,
            evidence=evidence,
            symbol=target.symbol if target is not None else "",
            indicators=extract(call.args, command=False),
        )

    def _imported_only(self, node: Global, reported: set[str]) -> Iterator[Finding]:
        resolved, known = self.knowledge(node)
        if known is not None and known.category is Category.SAFE:
            return
        member = self.program.member
        if node.module == UNRESOLVED_MODULE:
            yield self._computed_name(node)
            return
        if known is None:
            if resolved.symbol not in reported:
                reported.add(resolved.symbol)
                yield finding(
                    "PW200",
                    f"imports unknown global {resolved.display}",
                    member=member,
                    offset=node.offset,
                    evidence=self._evidence(node),
                    symbol=resolved.symbol,
                )
            return
        yield finding(
            RULE_FOR_CATEGORY[known.category],
            f"imports {resolved.display}: {known.reason}",
            member=member,
            offset=node.offset,
            evidence=self._evidence(node),
            symbol=resolved.symbol,
        )
