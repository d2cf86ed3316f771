#!/usr/bin/env bash
# The whole test suite in one command. First the set-up (scripts/provision.sh: packages, dockerd,
# PostgreSQL, .venv, the Python image; only what is missing), then unit tests and integration tests
# against the real Docker engine (and PostgreSQL, a registry and Airflow, which the tests start).
#
#   --setup-only    only the set-up
# Other arguments go to pytest, e.g. `./run_tests.sh tests/unit` or `-k push`.
set -euo pipefail
cd "$(dirname "$0")"

setup_only=false
pytest_args=()
for arg in "$@"; do
    case "$arg" in
        --setup-only) setup_only=true ;;
        *) pytest_args+=("$arg") ;;
    esac
done

# Stops here, with the commands to run, when it cannot set up everything the tests need.
scripts/provision.sh
$setup_only && exit 0

status=0
.venv/bin/python -m pytest "${pytest_args[@]}" || status=$?
if [ "$status" -eq 5 ]; then
    echo "error: pytest collected no tests; that is a failure, not a pass" >&2
    exit 1
fi
exit "$status"
