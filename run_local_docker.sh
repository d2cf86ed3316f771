#!/usr/bin/env bash
# The newcomer's one command: an embedded sample ingestion that needs no server.
#
# Prepares the tool's Python environment (.venv), builds the DataHub base and
# the demo connector image when missing or stale, then runs the demo: DataHub's
# SQLAlchemy source reads the small SQLite database in examples/sample_db and
# writes the metadata to examples/output/. Needs Python 3.10+ and network
# access to PyPI for the first build; sets up the rest (scripts/provision.sh --demo).
#
# Settings come from pyproject.toml; INVOKE_FACTORY_<KEY> overrides them
# (e.g. INVOKE_FACTORY_NAMESPACE=me ./run_local_docker.sh).
set -euo pipefail
cd "$(dirname "$0")"
started=$SECONDS

fail() {
    printf 'error: %s\n' "$1" >&2
    [ -n "${2:-}" ] && printf 'hint: %s\n' "$2" >&2
    exit 1
}

# --- the machine -----------------------------------------------------------------------------------
# What the demo needs and lacks, in one go: the Docker engine (docker.io, dockerd), python3-venv, and what
# `inv python-image` runs when the engine has no Python image yet (debootstrap, gpgv, the archive keyring).
# As root on Debian/Ubuntu the set-up script installs and starts it all, printing each step; otherwise it
# prints every command that would, and the demo stops before it starts anything.
scripts/provision.sh --demo >&2 \
    || fail "the machine lacks what the demo needs (above)." \
            "run the commands above (or 'sudo scripts/provision.sh --demo'), then ./run_local_docker.sh again."

# --- the tool's Python environment ------------------------------------------------------------------
python3 -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null \
    || fail "Python 3.10 or newer is needed as python3." "install it (e.g. 'sudo apt install python3 python3-venv')."
if [ ! -x .venv/bin/python ]; then
    echo "Creating the tool's environment in .venv ..."
    python3 -m venv .venv || fail "python3 cannot create a virtual environment." "install venv support (e.g. 'sudo apt install python3-venv')."
fi
# Reinstall only when the project's dependencies changed.
stamp=".venv/.run-local-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ]; then
    echo "Installing the tool into .venv ..."
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -e .
    rm -f .venv/.run-local-* && touch "$stamp"
fi

# --- images ---------------------------------------------------------------------------------------
demo_connector=${INVOKE_FACTORY_DEMO_CONNECTOR:-$(.venv/bin/python -c \
    'from pathlib import Path; from ingestion_factory.settings import pyproject_defaults; print(pyproject_defaults(Path("."))["demo_connector"])')}
python_image=${INVOKE_FACTORY_PYTHON_IMAGE:-$(.venv/bin/python -c \
    'from pathlib import Path; from ingestion_factory.settings import pyproject_defaults; print(pyproject_defaults(Path("."))["python_image"])')}
# Every base starts FROM this image: pull it, or build it from Debian packages where Docker Hub is unreachable;
# one built here by an earlier recipe of `inv python-image` is built again.
python_image_status=$(.venv/bin/python -c 'import sys; from pathlib import Path
from ingestion_factory.settings import load, pyproject_defaults
from ingestion_factory.engine.python_image import status
print(status(load({**pyproject_defaults(Path(".")), "python_image": sys.argv[1]}, Path("."))))' "$python_image" 2>&1) \
    || python_image_status="unknown (${python_image_status##*$'\n'})"
case "$python_image_status" in
    ok) ;;
    missing)
        echo "Getting the Python image $python_image ..."
        docker pull --quiet "$python_image" || .venv/bin/inv python-image ;;
    *)  echo "Python image $python_image: $python_image_status"
        .venv/bin/inv python-image ;;
esac
# Skips everything that is up to date: seconds when the images exist.
.venv/bin/inv build-connectors -c "$demo_connector"

# --- the demo ---------------------------------------------------------------------------------------
.venv/bin/inv run-local -c "$demo_connector"
echo "Done in $((SECONDS - started))s."
