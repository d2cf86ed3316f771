"""SIGTERM handled like Ctrl-C, so a stopped run cleans up as an interrupted one does.

Python's default for SIGTERM ends the process on the spot: no `finally`, so pin tags,
temporary directories, resolved-secret files and containers would stay behind. Inside
`terminate_as_interrupt()` it raises Terminated (a KeyboardInterrupt) in the main thread
instead; the task boundary turns it into exit 143, and Ctrl-C into 130.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator

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
