"""scripts/provision.sh decides what to set up: here against a fake machine made of stub commands.

Every command that would change the machine (apt-get, dockerd, pg_ctlcluster, inv python-image, ...)
is a stub that only records its call, so these tests never install or start anything.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# The script starts dockerd through systemd where systemd runs, directly elsewhere.
SYSTEMD = Path("/run/systemd/system").is_dir()
START_DOCKERD = "systemctl start docker" if SYSTEMD else "setsid -f dockerd"
SHOWN_START_DOCKERD = ("sudo systemctl start docker" if SYSTEMD
                       else "sudo sh -c 'setsid -f dockerd >>/var/log/dockerd.log 2>&1 </dev/null'")

# Real tools the scripts use; nothing else from the host is on PATH (sbin is, the script adds it).
TOOLS = ("bash", "dirname", "date", "seq", "sleep", "sha256sum", "cut", "rm", "touch", "sed", "awk", "ls", "sort",
         "tail", "mktemp", "wc", "uniq", "cat", "cp")

# name -> body; "$STATE" holds the fake machine's facts, "$CALLS" the log of changing commands.
STUBS = {
    "id": '[ "$1" = -u ] && { [ -e "$STATE/root" ] && echo 0 || echo 1000; } || echo tester',
    "docker": 'case "$1" in\n'
              '  info) if [ -s "$STATE/engine_after" ]; then n=$(cat "$STATE/engine_after"); '
              'echo $((n - 1)) >"$STATE/engine_after"; [ "$n" -le 1 ] && touch "$STATE/engine_up"; fi\n'
              '        [ -e "$STATE/engine_up" ] ;;\n'
              '  image) [ -e "$STATE/image" ] ;;\n'
              'esac',
    "pgrep": '[ -e "$STATE/dockerd_running" ]',
    "pg_isready": '[ -e "$STATE/postgres_up" ]',
    "pg_lsclusters": 'echo "15  main    5432 down   postgres /var/lib/postgresql/15/main x.log"',
    "psql": "exit 0",
    "docker-registry": "exit 0",
    "htpasswd": "exit 0",
    "gpgv": "exit 0",
    "mmdebstrap": "exit 0",
    "apt-get": 'echo "apt-get $*" >>"$CALLS"',
    "systemctl": 'echo "systemctl $*" >>"$CALLS"; [ "$*" != "start docker" ] || touch "$STATE/engine_up"',
    "dockerd": 'echo "dockerd $*" >>"$CALLS"',
    "setsid": 'echo "setsid $*" >>"$CALLS"; touch "$STATE/engine_up"',
    "pg_ctlcluster": 'echo "pg_ctlcluster $*" >>"$CALLS"; touch "$STATE/postgres_up"',
    "pg_createcluster": 'echo "pg_createcluster $*" >>"$CALLS"',
    "qemu-aarch64-static": "exit 0",
    "arch-test": "exit 0",
    "debootstrap": "exit 0",
    "mountpoint": '[ -e "$STATE/binfmt_mounted" ]',
    "mount": 'echo "mount $*" >>"$CALLS"',
    "update-binfmts": 'echo "update-binfmts $*" >>"$CALLS"; echo enabled >"$STATE/binfmt/qemu-aarch64"',
}


class Machine:
    """A copy of the scripts in a project of its own, and stub commands describing the machine."""

    def __init__(self, root: Path):
        self.project = root / "project"
        self.bin = root / "bin"
        self.state = root / "state"
        self.calls_log = root / "calls"
        (self.project / "scripts").mkdir(parents=True)
        shutil.copy(REPO / "scripts" / "provision.sh", self.project / "scripts")
        shutil.copy(REPO / "run_tests.sh", self.project)
        shutil.copy(REPO / "run_local_docker.sh", self.project)
        shutil.copy(REPO / "pyproject.toml", self.project)
        self.bin.mkdir()
        self.state.mkdir()
        self.keyring = self.state / "debian-archive-keyring.gpg"
        self.keyring.touch()
        for tool in TOOLS:
            (self.bin / tool).symlink_to(shutil.which(tool))
        for name, body in STUBS.items():
            self.stub(name, body)
        venv = self.project / ".venv" / "bin"
        venv.mkdir(parents=True)
        # Asked for the Python image's name (and whether a BuildKit CLI exists); records pytest runs.
        # The Python image's status: state files "image" (present) and "image_stale" (an earlier recipe).
        self.stub("python", '[ "$1" = -m ] && echo "python $*" >>"$CALLS"\n'
                  'case "$2" in *"status("*)\n'
                  '  if [ -f "$STATE/image_stale" ]; then echo "stale: it was built by an earlier recipe"\n'
                  '  elif [ -f "$STATE/image" ]; then echo ok; else echo missing; fi ;;\n'
                  '*) echo python:test ;; esac', directory=venv)
        self.stub("inv", 'echo "inv $*" >>"$CALLS"', directory=venv)
        digest = hashlib.sha256((self.project / "pyproject.toml").read_bytes()).hexdigest()[:16]
        (self.project / ".venv" / f".installed-{digest}").touch()
        self.set(root=True, engine_up=True, postgres_up=True, image=True)
        (self.state / "binfmt").mkdir()
        (self.state / "binfmt" / "qemu-aarch64").write_text("enabled\n")  # QEMU registered for aarch64

    def stub(self, name: str, body: str, directory: Path | None = None) -> None:
        path = (directory or self.bin) / name
        path.write_text(f"#!/bin/bash\n{body}\n")
        path.chmod(0o755)

    def remove(self, *names: str) -> None:
        for name in names:
            (self.bin / name).unlink()

    def set(self, **facts: bool) -> None:
        for fact, value in facts.items():
            path = self.state / fact
            path.touch() if value else path.unlink(missing_ok=True)

    def run(self, *args: str, script: str = "scripts/provision.sh") -> subprocess.CompletedProcess:
        env = {"PATH": str(self.bin), "STATE": str(self.state), "CALLS": str(self.calls_log), "HOME": "/tmp",
               "FACTORY_BINFMT_DIR": str(self.state / "binfmt"), "FACTORY_DEBIAN_KEYRING": str(self.keyring),
               "FACTORY_SBIN_DIRS": ""}  # the host's own sbin tools are no part of the fake machine
        return subprocess.run([str(self.project / script), *args], env=env, capture_output=True, text=True,
                              timeout=60)

    @property
    def calls(self) -> list[str]:
        return self.calls_log.read_text().splitlines() if self.calls_log.exists() else []


@pytest.fixture
def machine(tmp_path):
    missing = [tool for tool in TOOLS if not shutil.which(tool)]
    assert not missing, f"host tools missing: {missing}"
    return Machine(tmp_path)


def test_nothing_to_do_when_everything_is_there(machine):
    completed = machine.run()
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.startswith("set-up: nothing to do (")
    assert machine.calls == []


def test_as_root_on_debian_it_installs_and_starts_only_what_is_missing(machine):
    machine.remove("docker-registry", "htpasswd")
    machine.set(engine_up=False, postgres_up=False, image=False)
    completed = machine.run()
    assert completed.returncode == 0, completed.stderr
    assert machine.calls == [
        "apt-get update -qq",
        "apt-get install -y -qq --no-install-recommends docker-registry apache2-utils",
        *(["systemctl stop docker-registry"] if SYSTEMD else []),
        START_DOCKERD,
        "pg_ctlcluster 15 main start",
        "inv python-image",
    ]
    assert completed.stdout.splitlines()[-1].startswith("set-up: done in ")


def test_a_python_image_from_an_earlier_recipe_is_built_again(machine):
    machine.set(image_stale=True)
    completed = machine.run()
    assert completed.returncode == 0, completed.stderr
    assert machine.calls == ["inv python-image"]
    assert "earlier recipe" in completed.stdout


def test_the_debian_archive_is_checked_with_gpgv_and_the_archive_keyring(machine):
    machine.remove("gpgv")
    machine.keyring.unlink()
    completed = machine.run()
    assert completed.returncode == 0, completed.stderr
    assert "apt-get install -y -qq --no-install-recommends gpgv debian-archive-keyring" in machine.calls


def test_the_python_image_is_built_with_mmdebstrap_which_is_installed_when_missing(machine):
    machine.remove("mmdebstrap")
    completed = machine.run()
    assert completed.returncode == 0, completed.stderr
    assert "apt-get install -y -qq --no-install-recommends mmdebstrap" in machine.calls


def test_a_dockerd_that_is_starting_is_waited_for_not_started_twice(machine):
    machine.set(engine_up=False, dockerd_running=True)
    (machine.state / "engine_after").write_text("3")
    completed = machine.run()
    assert completed.returncode == 0, completed.stderr
    assert "waiting for the running dockerd" in completed.stdout
    assert machine.calls == []


def test_not_root_it_changes_nothing_and_prints_the_commands(machine):
    machine.remove("docker-registry", "htpasswd")
    machine.set(root=False, engine_up=False, postgres_up=False)
    completed = machine.run()
    assert completed.returncode == 1
    assert machine.calls == []
    for command in ("sudo apt-get update && sudo apt-get install -y --no-install-recommends "
                    "docker-registry apache2-utils",
                    SHOWN_START_DOCKERD,
                    "sudo pg_ctlcluster 15 main start",
                    "sudo scripts/provision.sh"):
        assert command in completed.stderr


def test_run_tests_stops_before_pytest_when_the_set_up_cannot_finish(machine):
    machine.set(root=False, engine_up=False)
    completed = machine.run("tests/unit", script="run_tests.sh")
    assert completed.returncode == 1
    assert "error: cannot finish the set-up the tests need" in completed.stderr
    assert machine.calls == []  # no pytest, nothing started


def test_check_changes_nothing_and_lists_what_set_up_would_do(machine):
    machine.remove("htpasswd")
    machine.set(engine_up=False, postgres_up=False)
    completed = machine.run("--check")
    assert completed.returncode == 1
    assert machine.calls == []
    assert completed.stdout.splitlines()[:4] == [
        "set-up would:", "  - install apache2-utils", "  - start dockerd", "  - start PostgreSQL 15/main"]


def test_without_apt_get_it_names_the_packages_to_install(machine):
    machine.remove("apt-get", "docker-registry")
    completed = machine.run()
    assert completed.returncode == 1
    assert "install what these Debian packages provide, with this system's package manager: docker-registry" \
        in completed.stderr
    assert machine.calls == []


def test_setup_only_runs_no_tests(machine):
    completed = machine.run("--setup-only", script="run_tests.sh")
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.startswith("set-up: nothing to do")
    assert machine.calls == []


def test_no_setup_runs_the_tests_without_touching_the_machine(machine):
    machine.set(root=False, engine_up=False)
    completed = machine.run("--no-setup", "tests/unit", script="run_tests.sh")
    assert completed.returncode == 0, completed.stderr
    assert machine.calls == ["python -m ruff check .", "python -m mypy", "python -m pytest --durations=25 tests/unit"]


def test_no_lint_leaves_the_static_checks_out(machine):
    machine.set(root=False, engine_up=False)
    completed = machine.run("--no-setup", "--no-lint", "tests/unit", script="run_tests.sh")
    assert completed.returncode == 0, completed.stderr
    assert machine.calls == ["python -m pytest --durations=25 tests/unit"]


def test_qemu_for_arm64_is_installed_and_registered_when_missing(machine):
    machine.remove("qemu-aarch64-static")
    (machine.state / "binfmt" / "qemu-aarch64").unlink()
    completed = machine.run("--check")
    assert completed.stdout.splitlines()[1:3] == [
        "  - install qemu-user-static", "  - register QEMU for aarch64 (binfmt_misc)"]
    completed = machine.run()
    assert completed.returncode == 0, completed.stderr
    assert machine.calls == [
        "apt-get update -qq",
        "apt-get install -y -qq --no-install-recommends qemu-user-static",
        f"mount -t binfmt_misc binfmt_misc {machine.state / 'binfmt'}",
        "update-binfmts --enable qemu-aarch64",
    ]


def test_not_root_it_prints_how_to_register_qemu(machine):
    (machine.state / "binfmt" / "qemu-aarch64").unlink()
    machine.set(root=False)
    completed = machine.run()
    assert completed.returncode == 1
    assert "sudo mount -t binfmt_misc binfmt_misc" in completed.stderr
    assert "sudo update-binfmts --enable qemu-aarch64" in completed.stderr
    assert machine.calls == []


# ------------------------------------------------------- --demo: what ./run_local_docker.sh needs


def without_docker(machine):
    """No docker at all; the stub apt-get installs the stub docker CLI."""
    machine.remove("docker")
    stub = machine.state.parent / "docker-stub"
    stub.write_text("#!/bin/bash\n" + STUBS["docker"] + "\n")
    stub.chmod(0o755)
    machine.stub("apt-get", f'echo "apt-get $*" >>"$CALLS"; [ "$1" != install ] || cp {stub} "$(dirname "$0")/docker"')
    machine.set(engine_up=False)


def without_python_image_tools(machine):
    """No mmdebstrap, gpgv nor the archive keyring."""
    machine.remove("mmdebstrap", "gpgv")
    machine.keyring.unlink()


PYTHON_IMAGE_PACKAGES = "mmdebstrap gpgv debian-archive-keyring"


def test_demo_as_root_installs_and_starts_the_engine_and_nothing_the_tests_alone_need(machine):
    without_docker(machine)
    without_python_image_tools(machine)
    machine.remove("docker-registry", "htpasswd")
    machine.set(postgres_up=False)
    completed = machine.run("--demo")
    assert completed.returncode == 0, completed.stderr
    # With no engine yet it cannot tell whether the Python image is there: what builds it comes along.
    assert machine.calls == ["apt-get update -qq",
                             f"apt-get install -y -qq --no-install-recommends docker.io {PYTHON_IMAGE_PACKAGES}",
                             START_DOCKERD]
    steps = [line for line in completed.stdout.splitlines() if line.startswith("== ")]
    assert [step.split(" (")[0] for step in steps] == [f"== install docker.io {PYTHON_IMAGE_PACKAGES}",
                                                       "== start dockerd"]


def test_demo_with_an_engine_and_its_python_image_needs_no_mmdebstrap(machine):
    without_python_image_tools(machine)
    machine.remove("docker-registry", "htpasswd")
    completed = machine.run("--demo")
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.startswith("set-up: nothing to do (") and machine.calls == []


@pytest.mark.parametrize("image", ["missing", "built by an earlier recipe"])
def test_demo_with_an_engine_but_no_python_image_installs_what_builds_it(machine, image):
    """Issue 30: the demo used to set up the engine, then stop at `inv python-image` without its root-filesystem tool."""
    without_python_image_tools(machine)
    machine.set(image=image != "missing", image_stale=image != "missing")
    completed = machine.run("--demo")
    assert completed.returncode == 0, completed.stderr
    assert machine.calls == ["apt-get update -qq",
                             f"apt-get install -y -qq --no-install-recommends {PYTHON_IMAGE_PACKAGES}"]


def test_demo_not_as_root_names_everything_missing_at_once(machine):
    without_python_image_tools(machine)
    machine.remove("docker")
    machine.set(root=False, engine_up=False, postgres_up=False)
    completed = machine.run("--demo")
    assert completed.returncode == 1 and machine.calls == []
    assert "cannot finish the set-up the demo needs as tester (not root). Run:" in completed.stderr
    assert ("sudo apt-get update && sudo apt-get install -y --no-install-recommends "
            f"docker.io {PYTHON_IMAGE_PACKAGES}") in completed.stderr
    assert SHOWN_START_DOCKERD in completed.stderr
    assert "then ./run_local_docker.sh again." in completed.stderr
    assert "sudo scripts/provision.sh --demo" in completed.stderr
    assert "pg_" not in completed.stderr  # the tests' PostgreSQL is no business of the demo


def test_the_tool_that_lays_out_the_python_image_is_named_once():
    """A switch to another tool is one line: the tests' set-up and the demo's share the list."""
    script = (REPO / "scripts" / "provision.sh").read_text()
    assert script.count("rootfs_tool=mmdebstrap ") == 1
    assert "mmdebstrap" not in script.split("rootfs_tool=", 1)[1].split("\n", 1)[1]


def test_the_demo_on_a_fresh_machine_sets_up_everything_in_one_go_as_root_then_goes_on(machine):
    without_docker(machine)
    without_python_image_tools(machine)
    completed = machine.run(script="run_local_docker.sh")
    assert machine.calls[:3] == ["apt-get update -qq",
                                 f"apt-get install -y -qq --no-install-recommends docker.io {PYTHON_IMAGE_PACKAGES}",
                                 START_DOCKERD]
    assert "set-up: done in " in completed.stderr
    # Past the set-up: the next step needs python3, which this fake machine lacks.
    assert "Python 3.10 or newer is needed" in completed.stderr


def test_the_demo_without_an_engine_and_not_root_says_what_to_run(machine):
    machine.remove("docker")
    machine.set(root=False, engine_up=False)
    completed = machine.run(script="run_local_docker.sh")
    assert completed.returncode == 1 and machine.calls == []
    lines = completed.stderr.strip().splitlines()
    assert "sudo apt-get update && sudo apt-get install -y --no-install-recommends docker.io" in completed.stderr
    assert lines[-2] == "error: the machine lacks what the demo needs (above)."
    assert lines[-1].startswith("hint: run the commands above")
    assert completed.stdout == ""
