"""`inv run-local`: one connector container on this machine, the way an orchestrator runs it.

Host network, the examples at /opt/operator (read-only but for output/, and
never examples/secrets/), the config in env `config` (or
a mounted read-only file when large or secret), logs streamed live, Ctrl-C
forwarded as `docker stop`, and the container's exit code as ours.
"""

from __future__ import annotations

import json
import signal
import sys
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..engine.daemon import plan_for
from ..engine.docker_engine import DockerEngine
from ..errors import ConfigError, FactoryError
from ..model import catalog as catalog_mod
from ..model.plan import UP_TO_DATE
from ..platforms import Platform, require_emulation
from ..platforms import parse as parse_platform
from ..progress import Progress
from ..settings import Settings
from . import examples as examples_mod
from . import metadata_file, run_config

CONTAINER_EXAMPLES = PurePosixPath("/opt/operator")
# Outside /opt/operator: a file mounted inside another bind mount would leave
# an empty placeholder file behind in the host's examples/.
CONTAINER_CONFIG_FILE = "/run/secrets/ingestion-config.json"
COMMAND = ["python", "main.py"]
# Docker's SIGTERM -> SIGKILL delay; main.py winds down within 6 s of SIGTERM.
STOP_TIMEOUT_S = 10
RUN_LABEL = "io.ingestion-factory.run-local"
# Builds the named connectors' images (commands.build): (settings, names) -> exit status.
ImageBuilder = Callable[[Settings, list[str]], int]
# examples/secrets/: the values configs name with ${file:...}, read on the host only.
SECRETS_DIR = "secrets"


@dataclass
class RunResult:
    exit_code: int
    summary: dict | None
    container: str
    kept: bool


@dataclass(frozen=True)
class Prepared:
    """What a run needs before its image: the config read and checked, the examples in place."""
    name: str
    platform: Platform | None
    run_conf: run_config.RunConfig
    examples_dir: Path


def prepare(settings: Settings, connector: str | None, config: str | None, platform: str | None,
            progress: Progress) -> Prepared:
    """The config first (a typo there should not wait for an image build), then the examples and their link."""
    chosen = parse_platform(platform) if platform else None
    if chosen is not None:
        require_emulation([chosen])
    name = connector or settings.demo_connector
    run_conf = run_config.load(config_file_for(settings, name, config))
    examples_dir = settings.examples_dir
    examples_mod.ensure_sample_db(examples_dir)
    examples_mod.ensure_output_dir(examples_dir)
    note = examples_mod.ensure_link(Path(settings.examples_link), examples_dir)
    if note:
        progress.warn(f"note: {note}")
    return Prepared(name, chosen, run_conf, examples_dir)


def run_image(settings: Settings, ref: str, name: str, prepared: Prepared, pipeline_type: str | None = None,
              keep: bool = False) -> RunResult:
    """The container, run as an orchestrator runs it; its logs go to stdout as they come."""
    engine = DockerEngine()
    with config_delivery(prepared.run_conf) as (environment, mounts):
        if pipeline_type:
            environment["pipelineType"] = pipeline_type
        mounts.extend(examples_mounts(Path(settings.examples_link), prepared.examples_dir))
        return run_container(engine, ref, environment, mounts, name=f"run-local-{name}-{uuid.uuid4().hex[:6]}",
                             keep=keep, out=sys.stdout)


def config_file_for(settings: Settings, connector: str, config: str | None) -> Path:
    if config:
        return Path(config).expanduser().resolve()
    if connector.removeprefix("ingestion-connector-") == settings.demo_connector and settings.demo_config:
        return settings.root / settings.demo_config
    raise ConfigError(f"no config for connector {connector!r}",
                      "give one with --config FILE (JSON or YAML); examples are in examples/")


def ensure_image(settings: Settings, name: str, build: bool, platform: Platform | None = None, *,
                 progress: Progress, build_image: ImageBuilder, plan=plan_for) -> tuple[str, str]:
    """The connector's verified image (its version tag) and catalog name; built first when missing and allowed."""
    catalog = catalog_mod.discover(settings)
    key = catalog.resolve([name])[0]
    extra = {}
    if platform is not None:  # that platform's variant, built for that platform alone when missing
        settings = settings.with_overrides(platforms=(platform.name,))
        extra["platform"] = platform
    plan, _ = plan(settings, catalog, [key], **extra)
    item = plan.items[key]
    if item.current is None:
        if not build:
            flag = f" --platform {platform}" if platform is not None else ""
            raise FactoryError(f"image {item.ref} does not exist",
                               f"build it with `inv build-connectors -c {item.name}{flag}`, or drop --no-build")
        progress.say(f"Image {item.ref} does not exist yet; building it first.")
        build_image(settings, [item.name])
    elif item.state != UP_TO_DATE:
        progress.warn(f"note: {item.ref} is not current ({item.state}: {item.reason}); running it anyway. "
                      f"`inv build-connectors -c {item.name}` refreshes it.")
    return item.ref, item.name


def describe_transport(run_conf: run_config.RunConfig) -> str:
    if run_conf.transport == run_config.FILE_TRANSPORT:
        return f"as read-only file {CONTAINER_CONFIG_FILE}, because {run_conf.why_file()}"
    return "in env `config`"


@contextmanager
def config_delivery(run_conf: run_config.RunConfig) -> Iterator[tuple[dict, list]]:
    """Environment and mounts carrying the config; a file lives only as long as the run."""
    if run_conf.transport == run_config.ENV_TRANSPORT:
        yield {"config": run_conf.text}, []
        return
    # A private directory on the host; the file itself is world-readable because
    # the container's user (uid 1000) is not the host user, and the bind mount of
    # the file alone never exposes the directory.
    with tempfile.TemporaryDirectory(prefix="run-local-") as private:
        path = Path(private) / "config.json"
        path.write_text(run_conf.text, encoding="utf-8")
        path.chmod(0o644)
        yield {"config_file": CONTAINER_CONFIG_FILE}, [_bind(str(path), CONTAINER_CONFIG_FILE, read_only=True)]


def examples_mounts(link: Path, examples_dir: Path) -> list:
    """examples/ at /opt/operator, read-only: the container writes only output/ and never sees secrets/.

    The config's secrets are resolved on the host and reach the container in its
    config alone; an empty read-only tmpfs hides examples/secrets/ from any code in the image.
    """
    from docker.types import Mount

    examples_dir = Path(examples_dir)
    mounts = [_bind(str(link.resolve()), str(CONTAINER_EXAMPLES), read_only=True),
              _bind(str(examples_dir / examples_mod.OUTPUT_DIR), str(CONTAINER_EXAMPLES / examples_mod.OUTPUT_DIR))]
    # Only over a folder that exists: the engine cannot make a mount point inside a read-only bind.
    if (examples_dir / SECRETS_DIR).is_dir():
        mounts.append(Mount(target=str(CONTAINER_EXAMPLES / SECRETS_DIR), source=None, type="tmpfs",
                            read_only=True, tmpfs_size="64k"))
    return mounts


def _bind(source: str, target: str, read_only: bool = False):
    from docker.types import Mount

    return Mount(target=target, source=source, type="bind", read_only=read_only)


def run_container(engine, image: str, environment: dict, mounts: list, *, name: str, keep: bool, out) -> RunResult:
    """Start, stream logs, stop on Ctrl-C/SIGTERM, collect the exit code, remove unless kept."""
    container = engine.run_detached(image, COMMAND, environment=environment, mounts=mounts, name=name,
                                    labels={RUN_LABEL: image})
    try:
        tail = LastLines()
        streamer = threading.Thread(target=_stream_logs, args=(lambda: engine.follow_logs(container), out, tail),
                                    name="logs", daemon=True)
        streamer.start()
        with _stop_signals_as_interrupt():
            status = _wait(container)
        streamer.join(timeout=5)
        return RunResult(status, parse_summary(tail.last()), container.name, keep)
    except KeyboardInterrupt:  # a stop outside _wait (just after the start): the container must not run on
        _stop_quietly(container)
        raise
    finally:
        if not keep:
            try:
                container.remove(force=True)
            except Exception:  # noqa: BLE001 - already gone is fine
                pass


def _stop_quietly(container) -> None:
    try:
        container.stop(timeout=STOP_TIMEOUT_S)
    except BaseException:  # noqa: BLE001 - a second interrupt, or already gone: kill what may be left
        try:
            container.kill()
        except Exception:  # noqa: BLE001
            pass


def _wait(container) -> int:
    """The exit code; the first Ctrl-C stops the container gracefully, a second one kills it."""
    try:
        return int(container.wait()["StatusCode"])
    except KeyboardInterrupt:
        print(f"\nStopping {container.name} (SIGTERM, SIGKILL after {STOP_TIMEOUT_S}s; Ctrl-C again to kill)...",
              file=sys.stderr, flush=True)
    try:
        container.stop(timeout=STOP_TIMEOUT_S)
    except KeyboardInterrupt:
        container.kill()
    return int(container.wait()["StatusCode"])


@contextmanager
def _stop_signals_as_interrupt():
    """Ctrl-C, and SIGTERM to `inv` (a CI timeout, a supervisor), both stop the container.

    SIGINT gets its handler explicitly: a process started in the background
    by a shell inherits SIGINT as ignored, and would never see Ctrl-C.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(_signum, _frame):
        raise KeyboardInterrupt

    previous = {signum: signal.signal(signum, interrupt) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _stream_logs(follow, out, tail: LastLines) -> None:
    """The container's log stream (`follow()`, read in this thread) to `out`, the last lines kept in `tail`."""
    try:
        for chunk in follow():
            text = chunk.decode("utf-8", errors="replace")
            out.write(text)
            out.flush()
            tail.feed(text)
    except Exception:  # noqa: BLE001 - the stream ends abruptly when the container is removed
        pass


class LastLines:
    """Keeps the last complete line of a stream that arrives in arbitrary chunks."""

    def __init__(self) -> None:
        self._pending = ""
        self._last = ""

    def feed(self, text: str) -> None:
        lines = (self._pending + text).split("\n")
        self._pending = lines.pop()
        for line in lines:
            if line.strip():
                self._last = line.strip()

    def last(self) -> str:
        return self._pending.strip() or self._last


def parse_summary(line: str) -> dict | None:
    """main.py's last line: a one-line JSON summary (None when the image printed something else)."""
    try:
        summary = json.loads(line)
    except ValueError:
        return None
    return summary if isinstance(summary, dict) and "status" in summary else None


def result_line(result: RunResult) -> str:
    summary = result.summary
    if not summary:
        return f"Container exited {result.exit_code} (no JSON summary on its last line)."
    text = (f"Result: {summary.get('status')} (exit {result.exit_code}): {summary.get('records', 0)} records, "
            f"{summary.get('warnings', 0)} warnings, {summary.get('failures', 0)} failures "
            f"in {summary.get('duration_s', '?')}s")
    if summary.get("reason"):
        text += f"\nReason: {summary['reason']}"
    return text


def sink_file_on_host(document: dict, examples_dir: Path) -> Path | None:
    """Where a DataHub `file` sink under /opt/operator lands on the host, if that is what the config uses."""
    sink = document.get("sink")
    if not isinstance(sink, dict) or sink.get("type") != "file":
        return None
    filename = (sink.get("config") or {}).get("filename")
    if not filename:
        return None
    try:
        relative = PurePosixPath(filename).relative_to(CONTAINER_EXAMPLES)
    except ValueError:
        return None
    return Path(examples_dir) / relative


def output_line(path: Path, root: Path) -> str:
    shown = path.relative_to(root) if path.is_relative_to(root) else path
    if not path.is_file():
        return f"The config's file sink {shown} was not written."
    try:
        summary = metadata_file.summarize(path)
    except FactoryError as exc:
        return f"Metadata written to {shown} ({exc.message})."
    return f"Metadata written to {shown}: {summary.describe()}."
