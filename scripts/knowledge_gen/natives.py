"""Child entry point: import the domain and print its native callables as JSON (see ``sandbox.run``)."""

from __future__ import annotations

import json
import os
import sys

from knowledge_gen.domain import import_domain, native_callables


def main() -> int:
    saved = os.dup(1)
    os.dup2(2, 1)  # whatever an imported module prints must not end up in the JSON
    try:
        domain, versions = import_domain()
        found = native_callables()
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
    payload = {
        "versions": versions,
        "failures": domain.failures,
        "natives": sorted([m, q, where] for (m, q), where in found.items()),
    }
    sys.stdout.write(json.dumps(payload))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
