"""On this machine, after ./run_tests.sh has set it up: a second set-up is a fast no-op.

The commands that would change the machine are replaced by stubs that record their calls, so the
test proves nothing is installed or started, not only that the script says so.
"""

from __future__ import annotations

import os
import subprocess
import time

from scratch_project import REPO

CHANGING_COMMANDS = ("apt-get", "dockerd", "setsid", "systemctl", "pg_ctlcluster", "pg_createcluster")


def test_a_second_set_up_installs_and_starts_nothing(tmp_path):
    stubs = tmp_path / "bin"
    stubs.mkdir()
    calls = tmp_path / "calls"
    for name in CHANGING_COMMANDS:
        stub = stubs / name
        stub.write_text(f'#!/bin/sh\necho "{name} $*" >>"{calls}"\nexit 1\n')
        stub.chmod(0o755)
    env = {**os.environ, "PATH": f"{stubs}:{os.environ['PATH']}"}
    started = time.monotonic()
    completed = subprocess.run([str(REPO / "scripts" / "provision.sh")], env=env, capture_output=True, text=True,
                               timeout=120)
    elapsed = time.monotonic() - started
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert completed.stdout.startswith("set-up: nothing to do"), completed.stdout
    assert not calls.exists(), calls.read_text()
    # A bound against a set-up that does work or hangs, not a speed figure (README has the measured one): the
    # build-cache check (`docker builder prune --keep-storage`) alone takes seconds after a test run's builds.
    assert elapsed < 15, f"a set-up with nothing to do took {elapsed:.1f}s"
