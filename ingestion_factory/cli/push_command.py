"""`inv push` and the mirror push of `inv unbundle --push`: their progress and result table."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from ..settings import Settings
from ..workflows import push as push_mod
from ..workflows.push import PushResult, PushRun
from .console_progress import ConsoleProgress
from .report import styled


def push(settings: Settings, names: list[str] | None, *, console: Console, **options) -> int:
    """Push (workflows/push.py), then the table of what happened; ends with the push's error, if any."""
    return show_run(push_mod.push(settings, names, progress=ConsoleProgress(console), **options), console)


def show_run(run: PushRun, console: Console) -> int:
    console.print(push_table(run.results, run.title))
    if run.report is not None:
        console.print(f"Report: {run.report}")
    if run.failure is not None:
        raise run.failure
    return 0


def push_table(results: list[PushResult], title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for column in ("image", "tags", "digest", "result"):
        table.add_column(column, overflow="fold")
    for result in results:
        table.add_row(result.repository, ", ".join(result.tags), result.digest or "-",
                      styled(result.status, result.detail))
    return table
