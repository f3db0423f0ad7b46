#!/usr/bin/env bash
# The whole test suite: install the package with every test dependency, lint, type-check, run pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --quiet -e ".[test]"
ruff check .
ruff format --check .
mypy src
python -m pytest -q
