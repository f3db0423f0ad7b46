#!/usr/bin/env bash
# The whole test suite: install the package with its test extras, lint, type-check, run pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --quiet -e ".[test]"
ruff check src tests scripts benchmarks fuzz
ruff format --check src
mypy src
python -m pytest -q
