"""What a build run did to each image (its line in the table and the JSON report), and that report."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from ..files import write_atomically
from ..status import Status


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
    # Where the rest of duration_s went (`inv bench` prints them as a per-step table).
    build_s: float = 0.0  # the BuildKit build (each step's time is in the build log)
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


def write_json(path: Path, results: list[Result], extra: dict[str, object] | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **(extra or {}),
        "images": [asdict(r) for r in results],
    }
    write_atomically(path, json.dumps(document, indent=2) + "\n")  # a reader never sees half a report
    return path
