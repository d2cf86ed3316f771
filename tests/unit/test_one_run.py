"""One run at a time, and files no two runs (or a killed one) can corrupt."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from ingestion_factory import files, run_lock
from ingestion_factory.engine import buildkit
from ingestion_factory.model import results as report
from ingestion_factory.model.results import BuildStatus, Result

# ----------------------------------------------------------------------------- the run lock


def test_a_second_run_with_no_wait_exits_2_naming_the_holder(tmp_path):
    with run_lock.held(tmp_path, "openmetadata", "inv build-connectors -c mysql"):
        with pytest.raises(run_lock.RunLocked) as caught:
            with run_lock.held(tmp_path, "openmetadata", "inv push", wait=False):
                pass
    assert caught.value.exit_code == 2
    assert f"pid {os.getpid()} (inv build-connectors -c mysql, since" in caught.value.message
    assert "namespace 'openmetadata'" in caught.value.message


def test_a_second_run_waits_saying_for_whom_then_goes_on(tmp_path):
    said: list[str] = []
    first_done = threading.Event()
    order: list[str] = []

    def first():
        with run_lock.held(tmp_path, "ns", "inv lock"):
            started.set()
            time.sleep(0.5)
            order.append("first")
        first_done.set()

    started = threading.Event()
    thread = threading.Thread(target=first)
    thread.start()
    started.wait(5)
    with run_lock.held(tmp_path, "ns", "inv catalog", notify=said.append):
        order.append("second")
    thread.join()
    assert order == ["first", "second"]
    assert said[0].startswith(f"waiting for pid {os.getpid()} (inv lock, since")
    assert said[-1] == "the other run finished; going on"


def test_other_namespaces_and_output_directories_do_not_wait(tmp_path):
    with run_lock.held(tmp_path, "one", "inv build-base"):
        with run_lock.held(tmp_path, "two", "inv build-base", wait=False):
            pass
        with run_lock.held(tmp_path / "elsewhere", "one", "inv build-base", wait=False):
            pass


def test_a_dead_holders_lock_is_taken_over_at_once(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from ingestion_factory import run_lock\n"
        f"with run_lock.held(Path({str(tmp_path)!r}), 'ns', 'inv push'):\n"
        "    print('held', flush=True); time.sleep(60)\n")], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline() == "held\n"
    with pytest.raises(run_lock.RunLocked, match=f"pid {holder.pid} \\(inv push"):
        with run_lock.held(tmp_path, "ns", "inv lock", wait=False):
            pass
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with run_lock.held(tmp_path, "ns", "inv lock", wait=False) as me:  # the file still names the dead one
        assert me.pid == os.getpid()
    assert run_lock.read_holder(run_lock.lock_path(tmp_path, "ns")).command == "inv lock"


def test_processes_a_run_starts_do_not_inherit_its_lock(tmp_path):
    with run_lock.held(tmp_path, "ns", "inv build-connectors"):
        child = subprocess.Popen(["sleep", "30"])  # like a docker build outliving its parent
    try:
        with run_lock.held(tmp_path, "ns", "inv lock", wait=False):
            pass
    finally:
        child.kill()
        child.wait()


def test_a_namespace_with_a_slash_is_one_lock_file(tmp_path):
    assert run_lock.lock_path(tmp_path, "org/team").parent == tmp_path / "locks"


# ------------------------------------------------------------------------- atomic writes


def test_two_writers_of_one_file_never_collide(tmp_path):
    """The fixed `.name.tmp` made 21 of 600 writes fail when two threads wrote one file."""
    target = tmp_path / "report.json"
    errors: list[BaseException] = []

    def write(text):
        try:
            for _ in range(300):
                files.write_atomically(target, text)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(text * 1000,)) for text in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert target.read_text() in ("a" * 1000, "b" * 1000)
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]  # no temporary file left


def test_an_atomic_write_keeps_the_files_mode_and_leaves_nothing_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "requirements.lock"
    files.write_atomically(target, "a\n")
    assert target.stat().st_mode & 0o777 == 0o644
    target.chmod(0o664)
    files.write_atomically(target, b"b\n")
    assert target.stat().st_mode & 0o777 == 0o664 and target.read_text() == "b\n"
    def disk_full(_descriptor):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        files.write_atomically(target, "c\n")
    assert target.read_text() == "b\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["requirements.lock"]


def test_a_json_report_is_never_seen_half_written(tmp_path):
    """report.write_json once truncated the report and then wrote it: a reader could see it empty."""
    path = tmp_path / "build-latest.json"
    results = [Result(name=f"image-{n}", ref=f"ns/image-{n}:1", status=BuildStatus.BUILT, detail="x" * 200)
               for n in range(200)]
    report.write_json(path, results)
    bad: list[str] = []
    stop = threading.Event()

    def read():
        while not stop.is_set():
            text = path.read_text()
            if not text.endswith("}\n"):
                bad.append(text[-20:])

    reader = threading.Thread(target=read)
    reader.start()
    for _ in range(60):
        report.write_json(path, results)
    stop.set()
    reader.join()
    assert bad == []


def test_a_leftover_temporary_file_is_never_an_input(project):
    from test_catalog import add_connector, discover

    add_connector(project, "x", "pkg\n")
    before = discover(project).images["x"].input_files
    directory = project / "images" / "connectors" / "x"
    (directory / ".requirements.lock.tmp").write_text("half a lock")  # the old fixed name, from a killed run
    (directory / ".requirements.lock.k2j3h4.tmp").write_text("half a lock")  # the new unique names
    assert discover(project).images["x"].input_files == before


# ------------------------------------------------------------------------------ build logs


def test_build_logs_are_appended_run_after_run(tmp_path):
    log = tmp_path / "mysql.log"
    buildkit._stream(["sh", "-c", "echo first run"], dict(os.environ), log, None)
    buildkit._stream(["sh", "-c", "echo second run"], dict(os.environ), log, None)
    text = log.read_text()
    assert "first run" in text and "second run" in text
    assert text.count(f"pid {os.getpid()} =====") == 2
