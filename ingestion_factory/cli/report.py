"""Live progress while images build, then the table of results and the failures."""

from __future__ import annotations

import threading
import time

from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from ..model.results import BuildStatus, Result, human_size
from ..status import Status


def styled(status: Status, detail: str = "") -> str:
    """Rich markup: the status word in its style, then `: detail` (escaped) when given."""
    text = f"[{status.style}]{escape(status.value)}[/]" if status.style else escape(status.value)
    return f"{text}: {escape(detail)}" if detail else text


class Progress:
    """Shows each image's state: a live table on a terminal, one line per change elsewhere."""

    def __init__(self, names: list[str], console: Console | None = None):
        self.console = console or Console(highlight=False)
        self.states = {name: "waiting" for name in names}
        self.started: dict[str, float] = {}
        self.finished: set[str] = set()
        self.lock = threading.Lock()
        self.live: Live | None = None

    def __enter__(self):
        if self.console.is_terminal:
            self.live = Live(self._table(), console=self.console, refresh_per_second=4, transient=True)
            self.live.__enter__()
        return self

    def __exit__(self, *exc):
        if self.live:
            self.live.__exit__(*exc)

    def update(self, name: str, state: str, *, announce: bool = True) -> None:
        with self.lock:
            if state in ("building", "looking up the cache") and name not in self.started:
                self.started[name] = time.monotonic()
            self.states[name] = state
            if self.live:
                self.live.update(self._table())
            elif announce:
                self.console.print(f"[{time.strftime('%H:%M:%S')}] {name}: {state}", markup=False)

    def finish(self, result: Result) -> None:
        """The image's final state; its clock stops."""
        with self.lock:
            self.finished.add(result.name)
        self.update(result.name, f"{result.status}: {result.detail}" if result.status.failed else str(result.status))

    def step(self, name: str, text: str) -> None:
        """Build steps only show on the live display; logs keep the full output."""
        if self.live:
            self.update(name, text, announce=False)

    def _table(self) -> Table:
        table = Table(box=None, show_header=False, pad_edge=False)
        now = time.monotonic()
        for name, state in self.states.items():
            running = name in self.started and name not in self.finished
            elapsed = f"{now - self.started[name]:5.0f}s" if running else ""
            table.add_row(name, elapsed, escape(state))
        return table


def summary_table(results: list[Result]) -> Table:
    table = Table(title="Images", title_justify="left")
    for column in ("image", "result", "duration", "size", "added over parent"):
        table.add_column(column, justify="right" if column in ("duration", "size", "added over parent") else "left")
    for result in results:
        table.add_row(
            result.ref,
            styled(result.status),
            f"{result.duration_s:.1f}s",
            human_size(result.size) if result.size else "-",
            human_size(result.added),
        )
    return table


def print_failures(console: Console, results: list[Result]) -> None:
    for result in results:
        if result.status is not BuildStatus.FAILED:
            continue
        console.print(f"\n[bold red]{result.name} failed:[/] {escape(result.detail)}")
        for line in result.details:
            console.print(f"    {line}", markup=False, highlight=False)
        if result.log:
            console.print(f"    full log: {result.log}")
