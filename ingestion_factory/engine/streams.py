"""The daemon's JSON progress streams (push, pull, load): one rule for what counts as an error in them.

The daemon answers these requests with HTTP 200 and then reports a failure (denied, unknown blob, manifest
invalid, registry unreachable, a layer it cannot apply) as an event inside the stream, so every event is read.
"""

from __future__ import annotations

from typing import Any


def stream_error(event: Any) -> str | None:
    """The failure an event reports, or None for a progress or result event (or anything that is no dict)."""
    if not isinstance(event, dict) or not ("error" in event or "errorDetail" in event):
        return None
    detail = event.get("errorDetail")
    message = detail.get("message") if isinstance(detail, dict) else None
    return str(message or event.get("error") or "the daemon reported an error")
