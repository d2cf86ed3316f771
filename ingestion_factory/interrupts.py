"""SIGTERM handled like Ctrl-C, so a stopped run cleans up as an interrupted one does.

Python's default for SIGTERM ends the process on the spot: no `finally`, so pin tags,
temporary directories, resolved-secret files and containers would stay behind. Inside
`terminate_as_interrupt()` it raises Terminated (a KeyboardInterrupt) in the main thread
instead; the task boundary turns it into exit 143, and Ctrl-C into 130.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Generic, TypeVar

EXIT_INTERRUPTED = 130  # 128 + SIGINT
EXIT_TERMINATED = 143  # 128 + SIGTERM


class Terminated(KeyboardInterrupt):
    signal_name = "SIGTERM"


def exit_code(exc: BaseException) -> int:
    return EXIT_TERMINATED if isinstance(exc, Terminated) else EXIT_INTERRUPTED


def signal_name(exc: BaseException) -> str:
    return getattr(exc, "signal_name", "SIGINT")


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return

    def handle(_signum, _frame):
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, handle)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


Step = TypeVar("Step")


class Running(Generic[Step]):
    """The steps of one kind this process runs (build processes, smoke-test containers), so an interrupt
    ends every one of them and starts none after it."""

    def __init__(self, end_one: Callable[[Step], None], refused: Callable[[str], BaseException]) -> None:
        self._end_one = end_one  # ends one step; must not raise
        self._refused = refused  # the error a step that may not start raises
        self._lock = threading.Lock()
        self._steps: set = set()
        self.ended: str | None = None

    def start(self, make: Callable[[], Step]) -> Step:
        """Make the step and keep it, under the lock: none can start between an end_all and its check."""
        with self._lock:
            if self.ended:
                raise self._refused(f"not started: {self.ended}")
            step = make()
            self._steps.add(step)
            return step

    def forget(self, step: Step) -> None:
        with self._lock:
            self._steps.discard(step)

    def end_all(self, reason: str) -> None:
        with self._lock:
            self.ended = reason
            running = list(self._steps)
        for step in running:
            self._end_one(step)

    def reset(self) -> None:
        with self._lock:
            self.ended = None
