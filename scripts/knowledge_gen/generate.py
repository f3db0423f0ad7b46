"""Putting it together: run in the sandbox child, prints the generated data as JSON."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import sys
import time
from typing import Any

from knowledge_gen import native
from knowledge_gen.domain import closed_roots, import_domain, native_callables
from knowledge_gen.introspect import GENERATED_BY, MISSING, build_springboards, domain_modules, log, resolve_dotted
from knowledge_gen.safe import build_safe
from knowledge_gen.sinks import COUNTS, EXPECTED_SINKS, build_sinks, package_of

# --------------------------------------------------------------------------------------------------
# Putting it together
# --------------------------------------------------------------------------------------------------


def generate() -> dict[str, Any]:
    started = time.monotonic()
    domain, versions = import_domain()
    log(f"imported {len(sys.modules)} modules in {time.monotonic() - started:.1f}s")
    log(f"{len(domain.failures)} modules failed to import, {len(domain.effects)} run code when imported")
    table = native.expand()
    natives: dict[tuple[str, str], tuple[str, str, Any]] = {}
    for key, (_where, obj) in native_callables().items():
        found = native.lookup(key[0], key[1], table)
        if found is not None:
            natives[key] = (*found, obj)
    modules = domain_modules()
    springboards = build_springboards(modules)
    log(f"springboards: {len(springboards)} modules, {sum(map(len, springboards.values()))} attributes")
    safe = build_safe(springboards, versions)
    log(f"safe: {len(safe.reasons)} globals ({time.monotonic() - started:.1f}s)")
    modules = domain_modules()  # sampling may have imported more (numpy.random._pickle)
    sinks = build_sinks(modules, natives)
    log(f"sinks: {len(sinks)} globals ({time.monotonic() - started:.1f}s)")

    for module, qualname, category in EXPECTED_SINKS:
        got = sinks.get((module, qualname))
        if module.split(".")[0] in versions and not versions[module.split(".")[0]]:
            continue
        if module not in modules or resolve_dotted(modules[module], qualname) is MISSING:
            log(f"expected sink {module}.{qualname} does not exist in this environment")
        elif got is None or got[0] != category:
            log(f"expected sink {module}.{qualname} ({category}) came out as {got}")
    # Safe and a sink at once: a global only *seen* in a sample pickle loses its safe mark (CyclicLR pickles
    # builtins.getattr); one listed for what it is (allowlist, layer class) stays safe, the walk being an
    # over-approximation. Both are logged for review.
    for key in sorted(set(safe.reasons) & set(sinks)):
        if key in safe.structural:
            log(
                f"conflict: {key[0]}.{key[1]} is listed safe and walks to a {sinks[key][0]} sink "
                f"({sinks[key][1]}); kept as safe"
            )
            del sinks[key]
        else:
            log(f"conflict: {key[0]}.{key[1]} seen in a sample pickle is a {sinks[key][0]} sink; not safe")
            del safe.reasons[key]
    # A sink class already covers its methods (the scanner matches qualname prefixes).
    for module, qualname in sorted(sinks):
        head = qualname.rsplit(".", 1)[0]
        if "." in qualname and (module, head) in sinks and (module, head) not in safe.reasons:
            del sinks[(module, qualname)]

    log(f"final: {len(safe.reasons)} safe, {len(sinks)} sinks (sink classes cover their methods)")
    reasons = sorted({reason for _category, reason in sinks.values()})
    index = {reason: i for i, reason in enumerate(reasons)}
    grouped: dict[str, dict[str, list[Any]]] = {}
    for (module, qualname), (category, reason) in sorted(sinks.items()):
        grouped.setdefault(module, {})[qualname] = [category, index[reason]]
    return {
        "generated_by": GENERATED_BY,
        "python": platform.python_version(),
        "numpy": versions.get("numpy"),
        "torch": versions.get("torch"),
        "platform": f"{platform.system()}-{platform.machine()}",
        # The closed world: every module under these top-level names was imported and walked, so a callable
        # there that is not a sink is known not to reach one. Modules that failed to import stay unknown.
        "closed": closed_roots(),
        # Every module that was imported and walked: a module these versions lack (torch.utils.bottleneck
        # is gone from torch 2.13) stays unknown rather than being taken as analysed.
        "modules": sorted(modules),
        # Per package: every name a pickle can reach that was classified, and how many of them are sinks.
        "counts": {
            package: {"callables": total, "sinks": sum(1 for m, _q in sinks if package_of(m) == package)}
            for package, total in sorted(COUNTS.items())
        },
        "import_failures": dict(sorted(domain.failures.items())),
        "import_effects": {m: list(v) for m, v in sorted(domain.effects.items())},
        "springboards": springboards,
        "safe": [
            {"module": m, "qualname": q, "reason": "; ".join(safe.reasons[(m, q)])} for m, q in sorted(safe.reasons)
        ],
        # Compact: one object per module, each sink [category, index into sink_reasons] (subclasses share
        # the reasons of the methods they inherit).
        "sink_reasons": reasons,
        "sinks": grouped,
    }


def render(data: dict[str, Any]) -> tuple[str, str]:
    """Two JSON texts, one springboard module, safe entry or sink module per line (small, diffable,
    reviewable): the main file, and the sink table the scanner reads only when a global is not known safe."""

    def dump(value: Any) -> str:
        return json.dumps(value, ensure_ascii=False)

    def block(rows: list[str], indent: str) -> list[str]:
        return [f"{indent}{row}{',' if i < len(rows) - 1 else ''}" for i, row in enumerate(rows)]

    lines = ["{"]
    lines += [f" {dump(key)}: {dump(data[key])}," for key in ("generated_by", "python", "numpy", "torch", "platform")]
    lines.append(f' "closed": {dump(data["closed"])},')
    lines.append(f' "counts": {dump(data["counts"])},')
    lines.append(f' "modules": {dump(data["modules"])},')
    for section in ("import_failures", "import_effects"):
        lines.append(f' "{section}": {{')
        lines += block([f"{dump(m)}: {dump(v)}" for m, v in data[section].items()], "  ")
        lines.append(" },")
    lines.append(' "springboards": {')
    lines += block([f"{dump(m)}: {dump(attrs)}" for m, attrs in data["springboards"].items()], "  ")
    lines.append(" },")
    lines.append(' "safe": [')
    lines += block([dump(entry) for entry in data["safe"]], "  ")
    lines.append(" ]")
    lines.append("}")
    text = "\n".join(lines) + "\n"
    sinks = ["{", f' "generated_by": {dump(data["generated_by"])},', ' "sink_reasons": [']
    sinks += block([dump(reason) for reason in data["sink_reasons"]], "  ")
    sinks += [" ],", ' "sinks": {']
    sinks += block([f"{dump(m)}: {dump(entries)}" for m, entries in data["sinks"].items()], "  ")
    sinks += [" }", "}"]
    sinks_text = "\n".join(sinks) + "\n"
    if {**json.loads(text), **json.loads(sinks_text)} != data:
        raise AssertionError("rendered JSON does not round-trip")
    return text, sinks_text


def main() -> int:
    """Child entry point (``sandbox.run("generate")``): the data as JSON on standard output."""
    # Whatever an imported module prints must not end up in the JSON: point fd 1 at stderr while working.
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            data = generate()
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
    sys.stdout.write(json.dumps(data))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
