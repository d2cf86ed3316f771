"""One run at a time per output directory and namespace.

build-base, build-connectors, push, lock, catalog and unbundle all write the same
things (images and their tags, locks, reports, logs): two of them at once would
overwrite each other's work. Each takes an exclusive `flock` on
<output_dir>/locks/<namespace>.lock first. The kernel drops the lock when its
holder exits, however it exits, so a dead holder never blocks anyone: the file
left behind just names the last holder. The descriptor is not inherited by the
docker/buildx processes a run starts, so none of them can keep it alive either.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from .errors import FactoryError

LOCK_DIR = "locks"
# How often a waiting run says again who it waits for.
REMIND_EVERY_S = 60.0
POLL_S = 0.2


class RunLocked(FactoryError):
    """Another run holds the lock and --no-wait was given."""

    exit_code = 2


@dataclass(frozen=True)
class Holder:
    """Who holds (or last held) a lock, as its file records it."""

    pid: int
    command: str
    since: str

    def describe(self) -> str:
        return f"pid {self.pid} ({self.command}, since {self.since})"


def lock_path(output_path: Path, namespace: str) -> Path:
    # A namespace may hold "/" (org/team): keep it one file name.
    return output_path / LOCK_DIR / (re.sub(r"[^A-Za-z0-9._-]", "_", namespace or "default") + ".lock")


def read_holder(path: Path) -> Holder | None:
    try:
        data = json.loads(path.read_text())
        return Holder(int(data["pid"]), str(data["command"]), str(data["since"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


@contextmanager
def held(output_path: Path, namespace: str, command: str, *, wait: bool = True,
         notify: Callable[[str], None] = lambda text: print(text, file=sys.stderr),
         clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> Iterator[Holder]:
    """Hold the run lock of this output directory and namespace for the duration of the block."""
    path = lock_path(output_path, namespace)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        _acquire(descriptor, path, namespace, wait, notify, clock, sleep)
        me = Holder(os.getpid(), command, datetime.now(timezone.utc).isoformat(timespec="seconds"))
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, (json.dumps(me.__dict__) + "\n").encode(), 0)
        yield me
    finally:
        os.close(descriptor)  # releases the flock


def _acquire(descriptor: int, path: Path, namespace: str, wait: bool, notify, clock, sleep) -> None:
    if _try_lock(descriptor):
        return
    holder = read_holder(path)
    who = holder.describe() if holder else "another process"
    if not wait:
        raise RunLocked(f"{who} is running in this output directory for namespace {namespace!r}",
                        f"wait for it, or run without --no-wait to queue behind it (lock: {path})")
    notify(f"waiting for {who}, which runs in this output directory for namespace {namespace!r} (lock: {path})")
    # Polled rather than a blocking flock: Ctrl-C stays immediate and the wait can say who it is on.
    reminded = clock()
    while not _try_lock(descriptor):
        sleep(POLL_S)
        if clock() - reminded >= REMIND_EVERY_S:
            reminded = clock()
            current = read_holder(path)
            notify(f"still waiting for {current.describe() if current else 'another process'}")
    notify("the other run finished; going on")


def _try_lock(descriptor: int) -> bool:
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
