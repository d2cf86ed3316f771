"""Live progress while images build, then a table and a JSON report."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.live import Live
from rich.table import Table

from .files import write_atomically
from .status import Status


class BuildStatus(Status):
    """What happened to one image in a build run."""

    BUILT = "built", "green"
    UP_TO_DATE = "up to date", "dim"
    PULLED = "pulled", "cyan"  # from the registry cache (--cache-from), then verified and tagged like a built one
    FAILED = "failed", "bold red"
    NOT_BUILT = "not built", "yellow"  # its parent failed, or --fail-fast stopped the run
    UNAVAILABLE = "unavailable", "magenta"  # connector.toml says it cannot be built here (not a failure)

    @property
    def failed(self) -> bool:
        return self in (BuildStatus.FAILED, BuildStatus.NOT_BUILT)


@dataclass(frozen=True)
class Result:
    """One image's line in the table and the JSON report."""

    name: str
    ref: str
    result: BuildStatus
    reason: str = ""
    cause: str = ""  # for failures: what kind (failures.Cause), e.g. "package not found"
    duration_s: float = 0.0
    smoke_s: float = 0.0
    image_id: str = ""
    size: int = 0
    added: int | None = None
    tags: tuple[str, ...] = ()
    log: str = ""
    details: tuple[str, ...] = ()  # for failures: the failing tool's own explanation, then the command
    platform: str = "linux/amd64"  # which platform's variant this line is about


def human_size(size: int | None) -> str:
    if size is None:
        return "-"
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if abs(value) < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"


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
        self.update(result.name, f"{result.result}: {result.reason}" if result.result.failed else str(result.result))

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
            result.result.styled(),
            f"{result.duration_s:.1f}s",
            human_size(result.size) if result.size else "-",
            human_size(result.added),
        )
    return table


def print_failures(console: Console, results: list[Result]) -> None:
    for result in results:
        if result.result is not BuildStatus.FAILED:
            continue
        console.print(f"\n[bold red]{result.name} failed:[/] {escape(result.reason)}")
        for line in result.details:
            console.print(f"    {line}", markup=False, highlight=False)
        if result.log:
            console.print(f"    full log: {result.log}")


def write_json(path: Path, results: list[Result], extra: dict | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **(extra or {}),
        "images": [asdict(r) for r in results],
    }
    write_atomically(path, json.dumps(document, indent=2) + "\n")  # a reader never sees half a report
    return path
