"""`inv rebuild`: the build's live table while it runs, then one verdict per image and, for a difference, the diff."""

from __future__ import annotations

import time

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..engine.docker_engine import DockerEngine, Engine
from ..model import catalog as catalog_mod
from ..model.plan import Plan
from ..model.results import write_json
from ..settings import Settings
from ..workflows import rebuild as rebuild_mod
from ..workflows.rebuild import RebuildResult
from .console_progress import ConsoleProgress
from .report import Progress, styled


def rebuild(settings: Settings, names: list[str], *, console: Console, keep: bool = False,
            engine: Engine | None = None) -> int:
    """Exit 0 when every rebuild is identical, 1 when one differs or did not build (bad input raises: 2)."""
    started = time.monotonic()
    catalog = catalog_mod.discover(settings)

    def display(plan: Plan) -> Progress:
        return Progress(plan.order, console)

    results = rebuild_mod.rebuild(settings, catalog, names, engine=engine or DockerEngine(),
                                  progress=ConsoleProgress(console), display=display, keep=keep)
    report = write_json(settings.output_path / "reports" / "rebuild-latest.json", results,
                        {"duration_s": round(time.monotonic() - started, 2)})
    console.print(rebuild_table(results))
    for result in results:
        show_result(result, console)
    console.print(f"Report: {report}")
    return 1 if any(result.failed for result in results) else 0


def rebuild_table(results: list[RebuildResult]) -> Table:
    table = Table(title="Rebuilt from recorded inputs, no build cache", title_justify="left")
    for column in ("image", "platform", "image ID", "rebuilt", "result", "time"):
        table.add_column(column, overflow="fold")
    for result in results:
        table.add_row(result.ref, result.platform, result.image_id[7:19], result.rebuilt_id[7:19] or "-",
                      styled(result.status, result.detail), f"{result.duration_s:.0f}s")
    return table


def show_result(result: RebuildResult, console: Console) -> None:
    if result.status is rebuild_mod.RebuildStatus.IDENTICAL:
        console.print(f"{escape(result.ref)}: identical, {result.image_id}", highlight=False)
        return
    if result.diff is not None:
        console.print(f"[bold]{escape(result.ref)}[/]: the rebuild differs", highlight=False)
        for line in result.diff.lines():
            console.print(escape(line), highlight=False, soft_wrap=True)
    elif result.log:
        console.print(f"{escape(result.ref)}: not rebuilt, see {escape(result.log)}", highlight=False)
    if result.kept:
        console.print(f"Kept the rebuilt image as {escape(', '.join(result.kept))} (remove it with docker rmi).",
                      highlight=False)
