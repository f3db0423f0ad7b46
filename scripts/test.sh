#!/usr/bin/env bash
# The whole test suite: install the package with every test dependency, lint, type-check, run pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --quiet -e ".[test]"
ruff check .
ruff format --check .
mypy src
# Type-check again against only the default dependencies: every optional import must check when absent.
bare=$(mktemp -d)
trap 'rm -rf "$bare"' EXIT
python -m venv "$bare"
python - <<'PY' > "$bare/requirements.txt"
try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib
with open("pyproject.toml", "rb") as handle:
    print("\n".join(tomllib.load(handle)["project"]["dependencies"]))
PY
"$bare/bin/python" -m pip install --quiet -r "$bare/requirements.txt"
mypy --python-executable "$bare/bin/python" src
python -m pytest -q
