#!/usr/bin/env bash
# Sets up what the test suite needs on this machine, and only what is missing:
#
#   packages  docker.io (engine and a BuildKit-capable CLI), mmdebstrap (and arch-test), gpgv and debian-archive-keyring
#             (`inv python-image` and `inv audit` verify the Debian archive with them),
#             postgresql, docker-registry and apache2-utils (the tests start their own servers from these);
#             python3-venv when python3 cannot make a virtual environment; qemu-user-static and
#             binfmt-support (arm64 images are built and smoke-tested under QEMU)
#   emulation binfmt_misc mounted and QEMU registered for aarch64, when not
#   daemons   dockerd and the PostgreSQL cluster on 127.0.0.1:5432, when not running
#   .venv     the tool and pytest, reinstalled only when pyproject.toml changes
#   image     the Python image every base starts FROM (`inv python-image`), when missing
#
# As root on Debian/Ubuntu it does all of it. Otherwise it changes nothing that needs root, prints the
# exact commands to run instead, and exits 1. When everything is there it changes nothing and says
# "set-up: nothing to do".
#
#   scripts/provision.sh           set up (./run_tests.sh runs this first; so does CI, through it)
#   scripts/provision.sh --check   change nothing; list what a set-up would do (exit 1 if anything)
#   scripts/provision.sh --demo    only what ./run_local_docker.sh needs: the Docker engine (docker.io,
#                                  dockerd), python3-venv, and what `inv python-image` needs unless the
#                                  Python image is there already; all missing packages in one apt-get
set -euo pipefail
cd "$(dirname "$0")/.."
# dockerd lives in sbin, which a non-root PATH may lack (FACTORY_SBIN_DIRS= leaves it out:
# the unit tests' fake machine has only its stub commands).
sbin_dirs=${FACTORY_SBIN_DIRS-/usr/sbin:/sbin}
[ -z "$sbin_dirs" ] || PATH="$PATH:$sbin_dirs"
started=${EPOCHREALTIME//[!0-9]/}

check=false
demo=false
case "${1:-}" in
    "") ;;
    --check) check=true ;;
    --demo) demo=true ;;
    -h | --help) sed -n '2,19s/^# \{0,1\}//p' "$0"; exit 0 ;;
    *) echo "usage: scripts/provision.sh [--check | --demo]" >&2; exit 2 ;;
esac
# What the set-up is for, in its messages: the tests, or (--demo) ./run_local_docker.sh's demo.
purpose="the tests need" again="./run_tests.sh"
$demo && purpose="the demo needs" again="./run_local_docker.sh"

as_root=false
[ "$(id -u)" = 0 ] && as_root=true
debian=false
command -v apt-get >/dev/null 2>&1 && debian=true
systemd=false
[ -d /run/systemd/system ] && systemd=true
sudo=""
$as_root || sudo="sudo "

changed=()  # what this run did
todo=()     # what is left: commands for the user, or (--check) what a set-up would do
root_would_do=false  # something on the list is what this script does as root

log() { printf '== %s (%s)\n' "$*" "$(date +%T)"; }
die() { printf 'error: %s\n' "$1" >&2; [ -z "${2:-}" ] || printf 'hint: %s\n' "$2" >&2; exit 1; }
have() { command -v "$1" >/dev/null 2>&1; }

# fix [--user] WHAT COMMAND-FOR-THE-USER FUNCTION [ARGS...]: run FUNCTION now when allowed (root, unless
# --user; never with --check); otherwise leave COMMAND-FOR-THE-USER on the list. Always called as a plain
# command (never after `if` or before `||`), so that `set -e` stops the script when FUNCTION fails.
fix() {
    local needs_root=true
    [ "$1" = --user ] && { needs_root=false; shift; }
    local what=$1 shown=$2
    shift 2
    if $check; then
        todo+=("$what")
        return 0
    fi
    if $needs_root && ! $as_root; then
        todo+=("$shown")
        root_would_do=true
        return 0
    fi
    log "$what"
    "$@"
    changed+=("$what")
}

engine_up() { docker info >/dev/null 2>&1; }
postgres_up() { pg_isready -q -h 127.0.0.1 -p 5432 >/dev/null 2>&1; }
# pgrep (procps) is not in a minimal Debian.
dockerd_running() { if have pgrep; then pgrep -x dockerd >/dev/null; else grep -qsx dockerd /proc/[0-9]*/comm; fi; }

wait_for() {  # wait_for SECONDS COMMAND...: true as soon as COMMAND succeeds
    local seconds=$1
    shift
    for _ in $(seq "$seconds"); do
        "$@" && return 0
        sleep 1
    done
    "$@"
}

# The Python image's name and its state: "ok", "missing", "stale: <why>" (built by an earlier recipe of
# `inv python-image`), or "unknown (<why>)" while the tool or the engine cannot tell yet.
python_image_name() {
    [ -z "${INVOKE_FACTORY_PYTHON_IMAGE:-}" ] || { echo "$INVOKE_FACTORY_PYTHON_IMAGE"; return 0; }
    .venv/bin/python -c 'from pathlib import Path
from ingestion_factory.settings import pyproject_defaults
print(pyproject_defaults(Path("."))["python_image"])' 2>/dev/null
}
python_image_status() {
    local found
    engine_up || { echo "unknown (no Docker engine yet)"; return 0; }
    found=$(.venv/bin/python -c 'import sys; from pathlib import Path
from ingestion_factory.settings import load, pyproject_defaults
from ingestion_factory.engine.python_image import status
print(status(load({**pyproject_defaults(Path(".")), "python_image": sys.argv[1]}, Path("."))))' "$1" 2>&1) \
        || found="unknown (${found##*$'\n'})"
    echo "$found"
}

# --- packages ---------------------------------------------------------------------------------------
# Probed by command, not by dpkg: an engine from Docker's own packages (docker-ce) counts too.
missing=()
if ! have docker || ! { engine_up || have dockerd; }; then missing+=(docker.io); fi
# Debian's python3 makes virtual environments only with python3-venv.
if [ ! -x .venv/bin/python ] && ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    have python3 || missing+=(python3)
    missing+=(python3-venv)
fi
# What `inv python-image` runs here: the tool that lays out the image's Debian root, and gpgv with the
# archive keyring that check the Debian archive's signatures (inv audit uses those two as well). The one
# list for the tests' set-up and the demo's: switching the root's tool is changing `rootfs_tool`.
rootfs_tool=mmdebstrap  # its command and its Debian package
python_image_packages() {
    have "$rootfs_tool" || missing+=("$rootfs_tool")
    have gpgv || missing+=(gpgv)
    [ -f "${FACTORY_DEBIAN_KEYRING:-/usr/share/keyrings/debian-archive-keyring.gpg}" ] || missing+=(debian-archive-keyring)
}
if $demo; then
    # The demo builds the Python image only when the engine lacks it: then `inv python-image` must not
    # stop after the engine was set up (on a fresh machine it cannot tell yet, so they count as needed).
    # Asked only when one is missing: the tool's answer takes a second.
    before=${#missing[@]}
    python_image_packages
    if [ "${#missing[@]}" -gt "$before" ] && [ "$(python_image_status "$(python_image_name)")" = ok ]; then
        missing=("${missing[@]:0:$before}")
    fi
else
    python_image_packages
    if ! have psql || ! { postgres_up || have pg_ctlcluster; }; then missing+=(postgresql); fi
    have docker-registry || missing+=(docker-registry)
    have htpasswd || missing+=(apache2-utils)
    have qemu-aarch64-static || missing+=(qemu-user-static)
    have arch-test || missing+=(arch-test)  # the arm64 Python image's root-filesystem tool checks QEMU with it
    have update-binfmts || missing+=(binfmt-support)
fi

install_packages() {
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "$@" >/dev/null
    # Where systemd runs, the registry package starts a server on :5000; the tests start their own.
    if $systemd && [[ " $* " == *" docker-registry "* ]]; then systemctl stop docker-registry || true; fi
}

if [ "${#missing[@]}" -gt 0 ]; then
    if $debian; then
        fix "install ${missing[*]}" \
            "${sudo}apt-get update && ${sudo}apt-get install -y --no-install-recommends ${missing[*]}" \
            install_packages "${missing[@]}"
    else
        todo+=("install what these Debian packages provide, with this system's package manager: ${missing[*]}")
    fi
fi

# --- emulation: arm64 images run under QEMU (binfmt_misc, with the F flag qemu-user-static sets) ----
binfmt=${FACTORY_BINFMT_DIR:-/proc/sys/fs/binfmt_misc}
register_qemu() {
    # In a container binfmt_misc is often not mounted, so the package could not register QEMU.
    mountpoint -q "$binfmt" || mount -t binfmt_misc binfmt_misc "$binfmt"
    update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || update-binfmts --import qemu-aarch64
    [ -e "$binfmt/qemu-aarch64" ] || die "QEMU for aarch64 is still not registered in $binfmt" \
        "apt-get install --reinstall qemu-user-static binfmt-support"
}

if ! $demo && [ ! -e "$binfmt/qemu-aarch64" ] && { have update-binfmts || [[ " ${missing[*]} " == *" binfmt-support "* ]]; }; then
    fix "register QEMU for aarch64 (binfmt_misc)" \
        "${sudo}mount -t binfmt_misc binfmt_misc $binfmt; ${sudo}update-binfmts --enable qemu-aarch64" \
        register_qemu
fi

# --- the Docker engine ----------------------------------------------------------------------------
start_dockerd() {
    if $systemd; then
        systemctl start docker
    else
        # Its own session: a Ctrl-C in the terminal running the tests must not reach the engine.
        setsid -f dockerd >>/var/log/dockerd.log 2>&1 </dev/null
    fi
    wait_for 60 engine_up || die "dockerd did not answer within 60s" "see /var/log/dockerd.log (or journalctl -u docker)"
}

if ! engine_up && have dockerd; then
    if [ -n "${DOCKER_HOST:-}" ]; then
        todo+=("start the Docker engine at DOCKER_HOST=$DOCKER_HOST, or unset DOCKER_HOST to use the local one")
    elif dockerd_running; then
        # Running but not answering: starting up (never start a second one), or not ours to use.
        if $check; then
            todo+=("wait for the running dockerd to answer")
        elif $as_root; then
            log "waiting for the running dockerd"
            wait_for 60 engine_up || die "dockerd is running but does not answer" "see its log (/var/log/dockerd.log)"
        else
            todo+=("${sudo}usermod -aG docker $(id -un)   # may use the running engine; then log in again")
        fi
    elif $systemd; then
        fix "start dockerd" "${sudo}systemctl start docker" start_dockerd
    else
        fix "start dockerd" "${sudo}sh -c 'setsid -f dockerd >>/var/log/dockerd.log 2>&1 </dev/null'" start_dockerd
    fi
fi

# The rest serves the tests only.
if ! $demo; then
# --- PostgreSQL (the tests create their own role and database in it) --------------------------------
start_postgres() {  # start_postgres VERSION CLUSTER [create]
    [ "${3:-}" != create ] || pg_createcluster --port 5432 "$1" "$2" >/dev/null
    for _ in 1 2 3 4 5; do
        pg_ctlcluster "$1" "$2" start 2>/dev/null || true
        postgres_up && return 0
        sleep 2  # a previous server may still be going away
    done
    die "PostgreSQL $1/$2 did not start" "see /var/log/postgresql/postgresql-$1-$2.log"
}

if ! postgres_up && have pg_ctlcluster; then
    read -r pg_version pg_cluster _ < <(pg_lsclusters --no-header 2>/dev/null | awk '$3 == 5432') || true
    if [ -n "${pg_version:-}" ]; then
        fix "start PostgreSQL $pg_version/$pg_cluster" "${sudo}pg_ctlcluster $pg_version $pg_cluster start" \
            start_postgres "$pg_version" "$pg_cluster"
    elif [ -z "$(pg_lsclusters --no-header 2>/dev/null)" ]; then
        # The package creates "main"; it is missing only when that was undone.
        pg_version=$(ls /usr/lib/postgresql 2>/dev/null | sort -V | tail -1) || true
        [ -n "$pg_version" ] || die "PostgreSQL has no server version installed" "apt-get install postgresql"
        fix "create and start PostgreSQL $pg_version/main" \
            "${sudo}pg_createcluster --port 5432 --start $pg_version main" \
            start_postgres "$pg_version" main create
    else
        todo+=("${sudo}pg_createcluster --port 5432 --start <version> factory   # the tests need a cluster on port 5432")
    fi
fi

# --- the tool's environment ------------------------------------------------------------------------
make_venv() {
    [ -x .venv/bin/python ] || python3 -m venv .venv
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
    rm -f .venv/.installed-* && touch "$stamp"
}

stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ] || [ ! -x .venv/bin/python ]; then
    # Without python3-venv (left on the list above) there is nothing to do here yet.
    if [ -x .venv/bin/python ] || python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
        fix --user "install the tool and pytest into .venv" "" make_venv
    fi
fi

# --- the Python image, and a docker CLI that can build with BuildKit ------------------------------
if [ -f "$stamp" ] && engine_up; then
    python_image=$(python_image_name)
    # Missing, or built here by an earlier recipe of `inv python-image` (which then builds it again).
    python_image_status=$(python_image_status "$python_image")
    if [ "$python_image_status" != ok ]; then
        fix "build the Python image $python_image (inv python-image: ${python_image_status//$'\n'/ })" \
            "${sudo}.venv/bin/inv python-image   # or: docker pull $python_image" .venv/bin/inv python-image
    fi
    if ! cli_problem=$(.venv/bin/python -c 'import sys
from ingestion_factory.engine import buildkit
from ingestion_factory.errors import FactoryError
try:
    buildkit.find_cli()
except FactoryError as exc:
    sys.exit(exc.render())' 2>&1); then
        todo+=("get a docker CLI that builds with BuildKit: ${cli_problem//$'\n'/ }")
    fi
fi

# --- disk: BuildKit's cache stays bounded ---------------------------------------------------------
# Every base change leaves a catalog's worth of layers in the build cache (the builds remove the images
# they replace themselves). Keep the cache under FACTORY_BUILD_CACHE_LIMIT (default 25GB) on machines
# that build many times.
cache_cli=${FACTORY_DOCKER_CLI:-/usr/bin/docker}
if $as_root && engine_up && [ -x "$cache_cli" ]; then
    reclaimed=$("$cache_cli" builder prune --force --keep-storage "${FACTORY_BUILD_CACHE_LIMIT:-25GB}" 2>/dev/null \
                | sed -n 's/^Total reclaimed space: //p')
    case "$reclaimed" in ""|0B) ;; *) changed+=("pruned $reclaimed of build cache over ${FACTORY_BUILD_CACHE_LIMIT:-25GB}") ;; esac
fi

fi

# --- what happened --------------------------------------------------------------------------------
elapsed() { local us=$((${EPOCHREALTIME//[!0-9]/} - started)); printf '%d.%d s' $((us / 1000000)) $((us / 100000 % 10)); }

if [ "${#todo[@]}" -gt 0 ]; then
    if $check; then
        echo "set-up would:"
        printf '  - %s\n' "${todo[@]}"
        echo "run it: scripts/provision.sh (as root), or ./run_tests.sh, which runs it first"
    else
        why=""
        $as_root || why=" as $(id -un) (not root)"
        $debian || why="$why on a system without apt-get"
        echo "error: cannot finish the set-up $purpose$why. Run:" >&2
        printf '  %s\n' "${todo[@]}" >&2
        echo "then $again again." >&2
        ! $root_would_do || echo "Or all of it at once: sudo scripts/provision.sh$($demo && echo ' --demo')" >&2
    fi
    exit 1
fi
if [ "${#changed[@]}" -eq 0 ]; then
    echo "set-up: nothing to do ($(elapsed))"
else
    printf -v summary '%s; ' "${changed[@]}"
    echo "set-up: done in $(elapsed): ${summary%; }"
fi
