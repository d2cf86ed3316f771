"""The library's Progress (progress.py) on a rich console: live bars and status lines on a terminal,
timestamped lines (every 25 % or 256 MB of a transfer) in a log."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.markup import escape

from ..model.results import human_size
from ..progress import Advance, Update

LOG_STEP = 256 * 1024 * 1024  # bytes between two log lines of a transfer of unknown size


class ConsoleProgress:
    def __init__(self, console: Console, *, timestamps: bool = True):
        self.console = console
        self.timestamps = timestamps

    def _line(self, text: str, style: str = "") -> None:
        stamp = f"[{time.strftime('%H:%M:%S')}] " if self.timestamps else ""
        body = f"[{style}]{escape(text)}[/]" if style else escape(text)
        self.console.print(escape(stamp) + body, highlight=False)

    def say(self, text: str) -> None:
        self._line(text)

    def warn(self, text: str) -> None:
        self._line(text, "yellow")

    def fail(self, text: str) -> None:
        self._line(text, "bold red")

    @contextmanager
    def transfer(self, what: str, total: int | None = None) -> Iterator[Advance]:
        if self.console.is_terminal:
            from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

            with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                          TransferSpeedColumn(), console=self.console, transient=True) as bar:
                task = bar.add_task(what, total=total)
                yield lambda count: bar.advance(task, count)
            return
        step = max(total // 4, 64 * 1024) if total else LOG_STEP
        done, next_line = 0, step

        def advance(count: int) -> None:
            nonlocal done, next_line
            done += count
            if done >= next_line:
                next_line += step
                self.say(f"{what}: {human_size(done)}" + (f" of {human_size(total)}" if total else ""))

        yield advance

    @contextmanager
    def status(self, text: str) -> Iterator[Update]:
        if not self.console.is_terminal:
            yield lambda new_text: None
            return
        with self.console.status(escape(text)) as shown:
            yield lambda new_text: shown.update(escape(new_text))
