"""What a step did to one image (StepResult, the one result type of every task), and the JSON report of a run.

Every task reports per image with a StepResult: a build (Result), a push and each of its tags (push.py), a lock
(lock.py), `inv verify`'s check of a digest (trust_check.py), `inv audit` (audit.py) and unbundling (bundle.py).
They share a name, a status (a StepStatus member: its word, its style, whether it is a failure), a detail and a
duration, and add what is theirs; each task's report keeps the keys it has always had (StepResult.JSON_KEYS).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import ClassVar

from ..files import write_atomically
from ..status import Status


class StepStatus(Status):
    """A step result's status. Members are its outcomes; an enum that has failures says which (`failed`)."""

    @property
    def failed(self) -> bool:
        return False


@dataclass(frozen=True, kw_only=True)
class StepResult:
    """What one step did to one image: its name, status, detail (why, for a failure) and duration in seconds.

    A task's record adds its own fields. JSON_KEYS is its report entry: the keys in their order, each a field or
    property, or `key=attribute` where the report names it otherwise (a build report's `result` is `status`).
    """

    JSON_KEYS: ClassVar[tuple[str, ...]] = ("name", "status", "detail", "duration_s")

    name: str
    status: StepStatus
    detail: str = ""
    duration_s: float = 0.0

    @property
    def failed(self) -> bool:
        return self.status.failed

    def as_json(self) -> dict[str, object]:
        entries = (key.partition("=") for key in self.JSON_KEYS)
        return {key: json_value(getattr(self, attribute or key)) for key, _, attribute in entries}


def json_value(value: object) -> object:
    """A value as the reports hold it: a step result by its own keys, other records field by field, a status by its
    word, a path as text; lists, tuples and mappings item by item."""
    if isinstance(value, StepResult):
        return value.as_json()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: json_value(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [json_value(item) for item in value]
    if isinstance(value, dict):
        return {key: json_value(item) for key, item in value.items()}
    return value


class BuildStatus(StepStatus):
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


@dataclass(frozen=True, kw_only=True)
class Result(StepResult):
    """A build's result for one image: its line in the table and the JSON report."""

    JSON_KEYS = ("name", "ref", "result=status", "reason=detail", "cause", "duration_s", "smoke_s", "build_s",
                 "normalize_s", "sbom_check_s", "tag_s", "image_id", "size", "added", "tags", "log", "details",
                 "platform")

    ref: str
    status: BuildStatus
    cause: str = ""  # for failures: what kind (failures.Cause), e.g. "package not found"
    smoke_s: float = 0.0
    # Where the rest of duration_s went (`inv bench` prints them as a per-step table).
    build_s: float = 0.0  # the BuildKit build (each step's time is in the build log), re-stamping included
    normalize_s: float = 0.0  # of which re-stamping the config with the image's epoch and loading it
    sbom_check_s: float = 0.0
    tag_s: float = 0.0
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


def write_json(path: Path, results: Sequence[StepResult], extra: dict[str, object] | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **(extra or {}),
        "images": [r.as_json() for r in results],
    }
    write_atomically(path, json.dumps(document, indent=2) + "\n")  # a reader never sees half a report
    return path
