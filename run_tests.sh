#!/usr/bin/env bash
# The whole test suite in one command. First the set-up (scripts/provision.sh: packages, dockerd,
# PostgreSQL, .venv, the Python image; only what is missing), then unit tests and integration tests
# against the real Docker engine (and PostgreSQL, a registry and Airflow, which the tests start).
#
#   --setup-only    only the set-up
#   --no-setup      no set-up (e.g. `./run_tests.sh --no-setup tests/unit` as a user without root);
#                   integration tests then fail or skip on what is missing
#   --allow-skips   accept a run in which tests were skipped (by default skips fail it: a skipped
#                   test proves nothing)
#   --no-lint       leave out the checks that run before the tests: ruff over the code and tests, and
#                   mypy --strict on model/ and engine/ (pyproject.toml); a failed check fails the run
# Other arguments go to pytest, e.g. `./run_tests.sh tests/unit` or `-k push`.
set -euo pipefail
cd "$(dirname "$0")"

setup_only=false
no_setup=false
allow_skips=false
lint=true
pytest_args=()
for arg in "$@"; do
    case "$arg" in
        --setup-only) setup_only=true ;;
        --no-setup) no_setup=true ;;
        --allow-skips) allow_skips=true ;;
        --no-lint) lint=false ;;
        *) pytest_args+=("$arg") ;;
    esac
done

if $no_setup; then
    if [ ! -x .venv/bin/python ]; then
        echo "error: --no-setup needs the tool's environment; create it (no root needed) with:" >&2
        echo "  python3 -m venv .venv && .venv/bin/pip install -e '.[test]'" >&2
        exit 1
    fi
else
    # Stops here, with the commands to run, when it cannot set up everything the tests need.
    scripts/provision.sh
    $setup_only && exit 0
fi

# The static checks first (seconds): their findings are printed, the tests still run, the run fails.
lint_failed=""
if $lint; then
    echo "== ruff check (F, B, I, UP) and mypy --strict (model/, engine/)"
    .venv/bin/python -m ruff check . || lint_failed="ruff"
    .venv/bin/python -m mypy || lint_failed="${lint_failed:+$lint_failed and }mypy"
fi

# tests/conftest.py writes one line per skipped test here: "<test id><TAB><reason>".
skips=$(mktemp)
trap 'rm -f "$skips"' EXIT
status=0
# The slowest tests are listed at the end, so a cold run shows where its time went.
FACTORY_SKIP_REPORT=$skips .venv/bin/python -m pytest --durations=25 "${pytest_args[@]}" || status=$?
if [ "$status" -eq 5 ]; then
    echo "error: pytest collected no tests; that is a failure, not a pass" >&2
    exit 1
fi
if [ -s "$skips" ] && ! $allow_skips; then
    echo "skipped, by reason:" >&2
    cut -f2- "$skips" | sort | uniq -c | sort -rn | sed 's/^ *\([0-9]*\) /  \1 x /' >&2
    echo "error: $(wc -l <"$skips") test(s) skipped (reasons above), so this run does not show that they pass;" \
         "give them what they need, or accept the skips with ./run_tests.sh --allow-skips" >&2
    [ "$status" -ne 0 ] || status=1
fi
if [ -n "$lint_failed" ]; then
    echo "error: $lint_failed found problems (above): fix them (\`.venv/bin/ruff check --fix .\` does most of ruff's)" >&2
    [ "$status" -ne 0 ] || status=1
fi
exit "$status"
