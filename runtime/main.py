"""Run one metadata-ingestion workflow inside a connector image.

Every connector image runs ``python main.py`` (its default command, and the
command Airflow's DockerOperator passes). It turns the configuration into a
workflow run of the image's framework and reports the outcome the way
orchestrators expect.

Usage
    python main.py                 run the workflow
    python main.py --validate      check the config offline against the framework's model
    python main.py --check         prove the framework and connector plugin import (no config, no network)
    python main.py --config PATH   read the config from a file instead of env `config`

Configuration (exactly one of)
    env config                 JSON or YAML text (what the DockerOperator passes)
    --config PATH              a file, typically a mounted volume or secret
    env config_file / CONFIG_FILE   the same, for orchestrators that only set env

    At most 4 MiB of UTF-8, 100,000 YAML values, nested at most 100 levels,
    and no YAML aliases (`*name`); JSON data only (no YAML dates, !!binary,
    !!set, no integer over 4300 digits): anything else is exit 2 with its
    position, so no config can hang or crash the container.

    Keep secrets in a mounted file, not in env `config`: environment variables
    are shown by `docker inspect`, in Airflow's rendered task fields and UI, and
    are inherited by every child process. A mounted file is readable only inside
    the container. Linux also refuses to start a process whose single
    environment string "config=<text>" exceeds 128 KiB (execve fails with
    "Argument list too long"), so a config that large must be a mounted file.

OpenMetadata compatibility
    pipelineType   env or top-level config key: metadata (default), usage, lineage,
                   profiler, autoClassification, TestSuite, dataInsight, dbt,
                   elasticSearchReindex, application - picks the workflow class
    pipelineRunId  env or top-level config key, passed on as the config's pipelineRunId
    workflowConfig.loggerLevel   sets the log level
    DataHub images accept pipelineType only as "metadata", and pipelineRunId as the recipe's run_id.

Environment baked into images
    INGESTION_FRAMEWORK        openmetadata (default) or datahub
    INGESTION_CONNECTOR        the source type the image carries (checked by --check)
    INGESTION_CHECK_MODULES    comma-separated modules --check must import
Tunables
    INGESTION_SERVER_TIMEOUT   seconds to wait for the server to answer the probe (default 5, at most 3600)
    INGESTION_STOP_GRACE       seconds a stop signal leaves the workflow to wind down (default 6, 1 to 3600)
    Either one not a finite number in its range is exit 2 before anything runs.
    INGESTION_TERMINATION_LOG  where the failure reason goes (default /dev/termination-log, if writable)

Exit codes
    0    success
    1    the workflow ran and failed, or its server is unreachable
    2    configuration missing or invalid (or bad command line)
    3    framework or connector plugin missing from the image
    143  stopped by SIGTERM or SIGINT: always once one came, within INGESTION_STOP_GRACE
    (Nothing in 125-127 or 137: those are Docker's and the kernel's.)

Output
    Logs stream to stdout line by line, with secrets masked. The very last line
    is a one-line JSON summary for Airflow's XCom:
    {"status": "success", "exit_code": 0, "framework": "datahub", "connector": "postgres",
     "mode": "run", "records": 12, "warnings": 0, "failures": 0, "duration_s": 3.21}
    with "reason" added on failure. The reason also goes to /dev/termination-log
    when that is writable (Kubernetes shows it as the container's last state).
"""

from __future__ import annotations

import os
import signal

if __name__ == "__main__":
    # Until main() installs its handlers (the imports below take a while), a stop
    # still ends the process 143, never in a KeyboardInterrupt traceback (exit 1).
    for _signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(_signum, lambda _signum, _frame: os._exit(143))

import _thread
import argparse
import json
import logging
import math
import socket
import ssl
import sys
import threading
import time
import traceback
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any, TextIO
from urllib.parse import urlsplit

from runtime_adapters import FrameworkAdapter, PluginMissing, RunCounts, WorkflowFailed, create_adapter, import_required
from runtime_config import ConfigError, load_config
from runtime_redaction import RedactingStream, Redactor

EXIT_SUCCESS = 0
EXIT_WORKFLOW_FAILED = 1
EXIT_CONFIG_ERROR = 2
EXIT_PLUGIN_MISSING = 3
EXIT_STOPPED = 143  # 128 + SIGTERM: what a shell reports for a process ended by TERM

STATUS_BY_EXIT_CODE = {
    EXIT_SUCCESS: "success",
    EXIT_WORKFLOW_FAILED: "failed",
    EXIT_CONFIG_ERROR: "config_error",
    EXIT_PLUGIN_MISSING: "missing_plugin",
    EXIT_STOPPED: "stopped",
}

DEFAULT_SERVER_TIMEOUT_S = 5.0
# An hour is beyond any sensible wait; beyond it (and inf, nan) timers and joins misbehave.
MAX_SETTING_S = 3600.0
# Docker sends SIGKILL 10 s after SIGTERM; leave room for the summary and exit.
DEFAULT_STOP_GRACE_S = 6.0
# After the grace period, how long writing the summary may take before the process exits without it.
SUMMARY_DEADLINE_S = 1.0
DEFAULT_TERMINATION_LOG = "/dev/termination-log"
MAX_REASON_LENGTH = 500

logger = logging.getLogger("ingestion.runtime")


class StopRequested(KeyboardInterrupt):
    """Raised in the main thread by a stop signal.

    Not an Exception, so the frameworks' broad `except Exception` blocks (which
    count an error and carry on) let it through and the run actually stops; a
    KeyboardInterrupt, so frameworks that treat Ctrl-C as a cancellation
    (DataHub marks the run CANCELLED) do the same for SIGTERM.
    """


@dataclass
class Outcome:
    exit_code: int
    reason: str | None = None
    counts: RunCounts = field(default_factory=RunCounts)


# --------------------------------------------------------------------- summary


class Reporter:
    """Writes the one-line JSON summary exactly once, as the very last line.

    Once a stop was requested the summary says `stopped` (exit 143), whatever
    the workflow ended with: a framework may swallow the stop request, or turn
    it into an error of its own, and the orchestrator must still see the stop.
    """

    def __init__(
        self,
        stream: RedactingStream,
        env: Mapping[str, str],
        mode: str,
        started: float,
        redactor: Redactor,
        stop_reason: Callable[[], str | None] = lambda: None,
    ) -> None:
        self._stream = stream
        self._env = env
        self._redactor = redactor
        self._started = started
        self._stop_reason = stop_reason
        self._lock = threading.Lock()
        self.fields: dict[str, Any] = {
            "framework": env.get("INGESTION_FRAMEWORK") or "openmetadata",
            "connector": env.get("INGESTION_CONNECTOR") or None,
            "mode": mode,
        }
        if env.get("INGESTION_FRAMEWORK_VERSION"):
            self.fields["framework_version"] = env["INGESTION_FRAMEWORK_VERSION"]
        self.emitted_exit_code: int | None = None

    def emit(self, outcome: Outcome) -> int:
        """Write the summary unless already written; return the exit code in force."""
        with self._lock:
            if self.emitted_exit_code is not None:
                return self.emitted_exit_code
            # Decided under the lock: a signal arriving now still makes this summary `stopped`.
            outcome = stopped_if_requested(outcome, self._stop_reason())
            summary = build_summary(outcome, self.fields, time.monotonic() - self._started)
            if "reason" in summary:  # also bound for the termination log, which is no redacting stream
                summary["reason"] = self._redactor.redact(summary["reason"])
            flush_logging()
            self._stream.write_last(json.dumps(summary) + "\n")
            if outcome.exit_code != EXIT_SUCCESS:
                write_termination_log(self._env, summary)
            self.emitted_exit_code = outcome.exit_code
            return outcome.exit_code


def stopped_if_requested(outcome: Outcome, stop_reason: str | None) -> Outcome:
    if stop_reason is None or outcome.exit_code == EXIT_STOPPED:
        return outcome
    ended = outcome.reason or STATUS_BY_EXIT_CODE.get(outcome.exit_code, "failed")
    logger.warning("%s; the workflow did not stop at once and ended with: %s", stop_reason, ended)
    return Outcome(EXIT_STOPPED, reason=stop_reason, counts=outcome.counts)


def build_summary(outcome: Outcome, fields: Mapping[str, Any], duration_s: float) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "status": STATUS_BY_EXIT_CODE.get(outcome.exit_code, "failed"),
        "exit_code": outcome.exit_code,
        **fields,
        "records": outcome.counts.records,
        "warnings": outcome.counts.warnings,
        "failures": outcome.counts.failures,
        "duration_s": round(duration_s, 2),
    }
    if outcome.exit_code != EXIT_SUCCESS:
        summary["reason"] = one_line(outcome.reason or STATUS_BY_EXIT_CODE.get(outcome.exit_code, "failed"))
    return summary


def one_line(text: str, limit: int = MAX_REASON_LENGTH) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def write_termination_log(env: Mapping[str, str], summary: Mapping[str, Any]) -> None:
    """Leave the failure reason where Kubernetes looks for it, when that is possible."""
    path = env.get("INGESTION_TERMINATION_LOG") or DEFAULT_TERMINATION_LOG
    # Only an existing, writable file: Kubernetes mounts it; plain Docker has none.
    if not os.path.isfile(path) or not os.access(path, os.W_OK):
        return
    try:
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(f"exit {summary['exit_code']} ({summary['status']}): {summary.get('reason', '')}\n")
    except OSError:
        pass


def flush_logging() -> None:
    for handler in logging.getLogger().handlers:
        handler.flush()


# ------------------------------------------------------------------- signals


class StopSignals:
    """Turns SIGTERM/SIGINT into StopRequested, with a watchdog and a hard deadline.

    The exception unwinds the workflow so stop() and the summary still run. It
    can fail to arrive, though: Python runs signal handlers only between
    bytecodes of the main thread, so a database driver blocked in C (libpq and
    SQLite retry their waits on EINTR) holds the handler back until its call
    returns; and an exception raised inside a __del__ or a callback from C
    (pydantic-core validating OpenMetadata's config) is only printed as
    "Exception ignored in ..." and lost. So the C-level wakeup fd also tells a
    watcher thread, which starts a watchdog at once. The watchdog raises the
    stop again whenever it was lost that way (sys.unraisablehook sees it), and
    when the grace period has passed it writes the summary and the process
    exits 143, well before Docker's SIGKILL; if even writing the summary hangs
    (a stuck thread holding an output lock), it exits without one.
    """

    def __init__(self, on_deadline: Callable[[str], None], grace_s: float = DEFAULT_STOP_GRACE_S) -> None:
        self.grace_s = grace_s
        self._on_deadline = on_deadline
        # Shielded until main() is inside the try that turns StopRequested into exit 143: a stop
        # before that is only recorded (the summary still says `stopped`), never raised where
        # nothing catches it.
        self._shielded = True
        self._interrupted = False
        self._lost = threading.Event()
        self._lock = threading.Lock()
        self.received: str | None = None

    @property
    def reason(self) -> str | None:
        """Why the run must end as `stopped`, once a stop signal came."""
        return f"stopped by {self.received}" if self.received else None

    @contextmanager
    def installed(self) -> Iterator[StopSignals]:
        reader, writer = socket.socketpair()
        writer.setblocking(False)  # required of a wakeup fd
        previous_fd = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
        previous_handlers = {signum: signal.signal(signum, self._handle) for signum in (signal.SIGTERM, signal.SIGINT)}
        previous_hook = sys.unraisablehook
        sys.unraisablehook = lambda unraisable: self._unraisable(unraisable, previous_hook)
        threading.Thread(target=self._watch, args=(reader,), name="stop-signal-watcher", daemon=True).start()
        try:
            yield self
        finally:
            sys.unraisablehook = previous_hook
            for signum, previous in previous_handlers.items():
                signal.signal(signum, previous)
            signal.set_wakeup_fd(previous_fd)
            writer.close()  # the watcher reads end-of-file and returns
            reader.close()

    def shield(self) -> None:
        """From here on (cleanup and summary) a signal must not interrupt."""
        self._shielded = True

    def unshield(self) -> None:
        """From here on a stop signal interrupts the main thread (StopRequested), once."""
        self._shielded = False
        if self.received is not None and not self._interrupted:  # one came while shielded
            self._interrupted = True
            raise StopRequested(self.reason)

    def _handle(self, signum: int, _frame: Any) -> None:
        self._start_watchdog(signum)
        # Interrupt once: a second signal must not break the cleanup the first began.
        if not self._shielded and not self._interrupted:
            self._interrupted = True
            raise StopRequested(self.reason)

    def _unraisable(self, unraisable: Any, previous_hook: Callable[[Any], None]) -> None:
        if not isinstance(unraisable.exc_value, StopRequested) or self._shielded:
            previous_hook(unraisable)
            return
        # Only flags here: raising again from inside this hook would be lost the same way.
        self._interrupted = False
        self._lost.set()

    def _watch(self, reader: socket.socket) -> None:
        try:
            data = reader.recv(1)
        except OSError:
            return
        if data:
            self._start_watchdog(data[0])

    def _start_watchdog(self, signum: int) -> None:
        with self._lock:
            if self.received is not None:
                return  # already stopping; one watchdog is enough
            self.received = signal.Signals(signum).name
        threading.Thread(target=self._watchdog, name="stop-watchdog", daemon=True).start()

    def _watchdog(self) -> None:
        deadline = time.monotonic() + self.grace_s
        while self._lost.wait(timeout=max(0.0, deadline - time.monotonic())):
            self._lost.clear()
            logger.warning("%s, but the framework swallowed the stop request; raising it again", self.reason)
            # SIGTERM whatever came: once our handler is gone, Python's default for it does nothing here.
            _thread.interrupt_main(signal.SIGTERM)
        last_resort = threading.Timer(SUMMARY_DEADLINE_S, os._exit, args=(EXIT_STOPPED,))
        last_resort.daemon = True
        last_resort.start()
        self._on_deadline(f"{self.reason}; the workflow did not wind down within {self.grace_s:g}s")


# ------------------------------------------------------------ server probe


def probe_server(url: str, label: str, timeout_s: float) -> None:
    """Fail fast, in bounded time, when the framework's server cannot be reached.

    Creating a workflow contacts the server first, with the framework's own
    retries and long read timeouts (OpenMetadata's client waits up to 300 s),
    so a server that is down or silent would look like a hang. Any HTTP
    answer, even an error status, proves a live server; no credentials are sent.
    """
    target = server_url_with_scheme(url)
    finished: dict[str, BaseException | None] = {}

    def request() -> None:
        try:
            insecure = ssl._create_unverified_context()  # reachability only: nothing secret is sent
            with urllib.request.urlopen(target, timeout=timeout_s, context=insecure):
                pass
            finished["error"] = None
        except urllib.error.HTTPError:
            finished["error"] = None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            finished["error"] = getattr(exc, "reason", None) if isinstance(exc, urllib.error.URLError) else exc

    # A thread bounds the whole probe: name resolution ignores socket timeouts.
    probe = threading.Thread(target=request, name="server-probe", daemon=True)
    probe.start()
    probe.join(timeout_s + 1)
    if "error" not in finished:
        raise WorkflowFailed(f"{label} server {url} is unreachable: no answer within {timeout_s:g}s")
    if finished["error"] is not None:
        raise WorkflowFailed(
            f"{label} server {url} is unreachable: {describe_connection_error(finished['error'], timeout_s)}"
        )


def server_url_with_scheme(url: str) -> str:
    """The server URL with a scheme (OpenMetadata accepts a bare host:port)."""
    target = url if "://" in url else f"http://{url}"
    parts = urlsplit(target)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"server address {url!r} is not an http(s) URL with a host")
    try:
        parts.port  # noqa: B018 - reading it is what validates it
    except ValueError:
        raise ConfigError(f"server address {url!r} has an invalid port") from None
    return target


def describe_connection_error(error: Any, timeout_s: float) -> str:
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, (socket.timeout, TimeoutError)):
        return f"no answer within {timeout_s:g}s"
    if isinstance(error, socket.gaierror):
        return f"host name does not resolve ({error.strerror})"
    if isinstance(error, BaseException):
        return getattr(error, "strerror", None) or str(error) or type(error).__name__
    return str(error)


# -------------------------------------------------------------------- modes


def seconds_from_env(
    env: Mapping[str, str], name: str, default: float, least: float = 0.0, most: float = MAX_SETTING_S
) -> float:
    """A number of seconds from the environment: finite, above `least` (or equal when it is not 0), at most `most`."""
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number of seconds") from None
    too_small = value <= 0 if least == 0 else value < least
    if not math.isfinite(value) or too_small or value > most:
        lower = "more than 0" if least == 0 else f"at least {least:g}"
        raise ConfigError(f"{name}={raw!r} must be a finite number of seconds, {lower} and at most {most:g}")
    return value


def server_timeout(env: Mapping[str, str]) -> float:
    return seconds_from_env(env, "INGESTION_SERVER_TIMEOUT", DEFAULT_SERVER_TIMEOUT_S)


def stop_grace(env: Mapping[str, str]) -> float:
    return seconds_from_env(env, "INGESTION_STOP_GRACE", DEFAULT_STOP_GRACE_S, least=1.0)


def run_checks(adapter: FrameworkAdapter, env: Mapping[str, str], out: TextIO) -> Outcome:
    """--check: the framework and connector plugin import. No config, no network."""
    modules = list(adapter.core_modules)
    modules += [name.strip() for name in env.get("INGESTION_CHECK_MODULES", "").split(",") if name.strip()]
    problems: list[str] = []
    for module_name in modules:
        problems += _check(out, f"import {module_name}", lambda name=module_name: _import_quietly(name))
    connector = (env.get("INGESTION_CONNECTOR") or "").strip()
    if connector and not problems:
        problems += _check(out, f"connector {connector}", lambda: adapter.check_connector(connector))
    if problems:
        return Outcome(EXIT_PLUGIN_MISSING, reason="; ".join(problems))
    return Outcome(EXIT_SUCCESS)


def _import_quietly(module_name: str) -> None:
    import_required(module_name)


def _check(out: TextIO, label: str, check: Callable[[], str | None]) -> list[str]:
    """Run one check, print one line about it, return its problem if any."""
    try:
        detail = check()
    except (PluginMissing, ConfigError) as exc:
        out.write(f"MISSING {label}: {exc}\n")
        return [str(exc)]
    out.write(f"ok      {detail or label}\n")
    return []


def run_workflow(adapter: FrameworkAdapter, config: dict, stop_signals: StopSignals) -> Outcome:
    """create -> run -> raise on failure -> print status; stop() always."""
    try:
        adapter.create(config)
        adapter.run()
        adapter.raise_on_failure()
        adapter.print_status()
    finally:
        stop_signals.shield()
        stop_quietly(adapter)
    return Outcome(EXIT_SUCCESS, counts=counts_quietly(adapter))


def stop_quietly(adapter: FrameworkAdapter) -> None:
    """stop() must not replace the error that ended the run."""
    try:
        adapter.stop()
    except Exception:  # noqa: BLE001
        logger.warning("stopping the workflow failed", exc_info=True)


def counts_quietly(adapter: FrameworkAdapter) -> RunCounts:
    try:
        return adapter.counts()
    except Exception:  # noqa: BLE001 - counts are informative only
        logger.debug("could not read the workflow's counts", exc_info=True)
        return RunCounts()


def execute(
    args: argparse.Namespace,
    env: Mapping[str, str],
    redactor: Redactor,
    stop_signals: StopSignals,
    reporter: Reporter,
    out: TextIO,
) -> Outcome:
    adapter: FrameworkAdapter | None = None
    try:
        adapter = create_adapter(env.get("INGESTION_FRAMEWORK"))
        reporter.fields["framework"] = adapter.name
        if args.check:
            return run_checks(adapter, env, out)
        config = load_config(env, args.config)
        redactor.add_secrets_from(config)
        if not reporter.fields["connector"]:  # the base image carries no connector name
            reporter.fields["connector"] = source_type(config)
        config = adapter.prepare(config, env)
        reporter.fields.update(adapter.describe())
        apply_log_level(adapter.log_level(config))
        adapter.validate(config)
        if args.validate:
            logger.info("configuration is valid for %s", adapter.name)
            return Outcome(EXIT_SUCCESS)
        server = adapter.server_url(config)
        if server:
            probe_server(server, adapter.server_label, server_timeout(env))
        return run_workflow(adapter, config, stop_signals)
    except ConfigError as exc:
        logger.error("invalid configuration: %s", exc)
        return Outcome(EXIT_CONFIG_ERROR, reason=f"invalid configuration: {exc}")
    except PluginMissing as exc:
        logger.error("missing from this image: %s", exc)
        return Outcome(EXIT_PLUGIN_MISSING, reason=str(exc))
    except WorkflowFailed as exc:
        logger.error("workflow failed: %s", exc)
        return Outcome(EXIT_WORKFLOW_FAILED, reason=str(exc), counts=_counts_if(adapter))
    except StopRequested as exc:
        logger.warning("%s; the workflow was stopped", exc)
        return Outcome(EXIT_STOPPED, reason=str(exc), counts=_counts_if(adapter))
    except Exception as exc:  # noqa: BLE001 - any other error still gets a summary
        logger.error("unexpected error:\n%s", traceback.format_exc())
        return Outcome(
            EXIT_WORKFLOW_FAILED, reason=f"unexpected error: {type(exc).__name__}: {exc}", counts=_counts_if(adapter)
        )


def source_type(config: Mapping[str, Any]) -> str | None:
    source = config.get("source")
    return source.get("type") if isinstance(source, dict) else None


def _counts_if(adapter: FrameworkAdapter | None) -> RunCounts:
    return counts_quietly(adapter) if adapter is not None else RunCounts()


# ------------------------------------------------------------ process setup


LOG_LEVELS = {
    "DEBUG": logging.DEBUG,
    "INFO": logging.INFO,
    "WARN": logging.WARNING,
    "WARNING": logging.WARNING,
    "ERROR": logging.ERROR,
    "CRITICAL": logging.CRITICAL,
}
LOG_FORMAT = "[%(asctime)s] %(levelname)-8s {%(name)s} - %(message)s"


def apply_log_level(level: str | None) -> None:
    if not level:
        return
    resolved = LOG_LEVELS.get(str(level).upper())
    if resolved is None:
        logger.warning("unknown loggerLevel %r; keeping INFO", level)
        return
    logging.getLogger().setLevel(resolved)


@contextmanager
def redacted_output(redactor: Redactor) -> Iterator[RedactingStream]:
    """Route stdout, stderr and logging through the redactor, one line at a time.

    Logs go to stdout together with the summary: with one stream the summary
    is certainly the last line, also when an orchestrator merges two pipes.
    Installed before any framework is imported, so the frameworks' own
    logging.basicConfig() calls find a handler and leave it alone.
    """
    saved = (sys.stdout, sys.stderr)
    out = RedactingStream(sys.stdout, redactor)
    sys.stdout, sys.stderr = out, RedactingStream(sys.stderr, redactor)
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter(LOG_FORMAT, datefmt="%Y-%m-%d %H:%M:%S"))
    root = logging.getLogger()
    saved_level, saved_handlers = root.level, root.handlers[:]
    root.handlers = [handler]
    root.setLevel(logging.INFO)
    # Python warnings become log lines too, in the same stream and order.
    logging.captureWarnings(True)
    try:
        yield out
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        logging.captureWarnings(False)
        root.handlers, root.level = saved_handlers, saved_level
        sys.stdout, sys.stderr = saved


class CommandLineError(Exception):
    """A usage error (exit code 2, like argparse's own)."""


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # Raise instead of exiting, so a usage error still ends with the summary line.
        raise CommandLineError(f"{message} ({self.format_usage().strip()})")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    # The module docstring is the contract; `docker run IMAGE python main.py --help` shows it.
    parser = _ArgumentParser(prog="main.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="import the framework and connector plugin, then exit")
    mode.add_argument("--validate", action="store_true", help="validate the config offline, then exit")
    parser.add_argument("--config", metavar="PATH", help="read the config from this file (JSON or YAML)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """Run one mode and return its exit code; the summary is the last line printed."""
    env = os.environ if env is None else env
    started = time.monotonic()
    redactor = Redactor()
    with redacted_output(redactor) as out:
        try:
            args = parse_args(argv)
        except SystemExit:  # --help has printed the contract
            return EXIT_SUCCESS
        except CommandLineError as exc:
            logger.error("invalid command line: %s", exc)
            return Reporter(out, env, "run", started, redactor).emit(
                Outcome(EXIT_CONFIG_ERROR, reason=f"invalid command line: {exc}")
            )
        mode = "check" if args.check else "validate" if args.validate else "run"
        stop_signals = StopSignals(lambda reason: exit_now(reporter.emit(Outcome(EXIT_STOPPED, reason=reason))))
        reporter = Reporter(out, env, mode, started, redactor, stop_reason=lambda: stop_signals.reason)
        try:  # settings first: a bad one is exit 2 before anything runs
            stop_signals.grace_s = stop_grace(env)
            server_timeout(env)
        except ConfigError as exc:
            logger.error("invalid configuration: %s", exc)
            return reporter.emit(Outcome(EXIT_CONFIG_ERROR, reason=f"invalid configuration: {exc}"))
        with stop_signals.installed():
            # The handlers start shielded; the stop that unshield() or any later instant raises
            # is caught by one of the two handlers below, wherever it lands.
            try:
                try:
                    stop_signals.unshield()
                    outcome = execute(args, env, redactor, stop_signals, reporter, out)
                except ConfigError as exc:
                    outcome = Outcome(EXIT_CONFIG_ERROR, reason=f"invalid configuration: {exc}")
                finally:
                    stop_signals.shield()
            except StopRequested as exc:  # a signal in the instant around execute()
                stop_signals.shield()
                outcome = Outcome(EXIT_STOPPED, reason=str(exc))
            return reporter.emit(outcome)


def exit_now(code: int) -> None:
    """Leave without running atexit hooks or joining threads.

    The summary must stay the last line, and framework threads (status
    timers, worker pools) must not hold the container past Docker's stop timeout.
    """
    for stream in (sys.stdout, sys.stderr):
        with suppress(Exception):  # a closed pipe must not turn the exit code into a traceback
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    exit_now(main())
