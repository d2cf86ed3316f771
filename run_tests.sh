#!/usr/bin/env bash
# The whole test suite in one command: unit tests, then integration tests against
# the real Docker engine (and PostgreSQL, a registry and Airflow, which the tests start).
# Extra arguments go to pytest, e.g. `./run_tests.sh tests/unit` or `-k push`.
set -euo pipefail
cd "$(dirname "$0")"

if [ ! -x .venv/bin/python ]; then
    echo "Creating the tool's environment in .venv ..."
    python3 -m venv .venv
fi
# Reinstall only when the project's dependencies changed.
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ]; then
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
    rm -f .venv/.installed-* && touch "$stamp"
fi

status=0
.venv/bin/python -m pytest "$@" || status=$?
if [ "$status" -eq 5 ]; then
    echo "error: pytest collected no tests; that is a failure, not a pass" >&2
    exit 1
fi
exit "$status"
