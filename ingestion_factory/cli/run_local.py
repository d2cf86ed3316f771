"""`inv run-local`: what the workflow (workflows/local_run.py) does, shown as it happens."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape

from ..settings import Settings
from ..workflows import local_run
from ..workflows.local_run import CONTAINER_EXAMPLES, ImageBuilder
from .console_progress import ConsoleProgress


def run_local(settings: Settings, connector: str | None = None, config: str | None = None,
              pipeline_type: str | None = None, keep: bool = False, build: bool = True,
              platform: str | None = None, *, console: Console, build_image: ImageBuilder) -> int:
    """Run the connector's image with the config; returns the container's exit code.

    `platform` runs that platform's variant (linux/arm64 under QEMU on an amd64 host); `build_image` builds
    a missing image (the command layer's build).
    """
    progress = ConsoleProgress(console, timestamps=False)  # notes read `note: ...`, as before
    prepared = local_run.prepare(settings, connector, config, platform, progress)
    ref, name = local_run.ensure_image(settings, prepared.name, build, prepared.platform, progress=progress,
                                       build_image=build_image)
    console.print(escape(f"Running {ref} (network host; {settings.examples_link} -> {prepared.examples_dir} at "
                         f"{CONTAINER_EXAMPLES}; config {local_run.describe_transport(prepared.run_conf)})"))
    result = local_run.run_image(settings, ref, name, prepared, pipeline_type, keep)
    console.print(local_run.result_line(result), markup=False)
    if result.kept:
        console.print(f"Kept container {result.container}: `docker logs {result.container}`, "
                      f"`docker rm {result.container}` when done.")
    if result.exit_code == 0:
        output = local_run.sink_file_on_host(prepared.run_conf.document, prepared.examples_dir)
        if output is not None:
            console.print(local_run.output_line(output, settings.root), markup=False)
    return result.exit_code
