"""JSON from outside (a registry's answer, a bundle's members, an SBOM read back from an image, an OSV
record), parsed only within bounds.

`json.loads` takes any size and recurses once per level of nesting: a few MB of `[` end in a
RecursionError that no caller expects, and a large answer in a long wait and much memory. load_json
refuses both before parsing, with a DocumentError (a ValueError) whose message is one line; each
caller turns it into its own error (a RegistryError, a refused bundle, a malformed record).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from itertools import accumulate, count
from operator import sub
from typing import Any

MiB = 1024 * 1024
MAX_BYTES = 4 * MiB  # the size a registry must accept for a manifest (OCI distribution spec); ours are KBs
# Manifests, envelopes and SBOMs are under ten levels deep; the runtime's config reader allows 100 as well.
MAX_DEPTH = 100

_NOT_STRUCTURE = bytes(b for b in range(256) if b not in b'[]{}"')
_WEIGHTS = bytes.maketrans(b"[{]}", b"\x02\x02\x00\x00")  # an opener 2, a closer 0: see _depth_exceeds
_CHUNK = 64  # brackets looked at together: small, so a shallow document skips most
_WINDOW = 64 * 1024  # bytes of structure split at quotes at once


class DocumentError(ValueError):
    """JSON from outside that is refused: too large, nested too deep, or not JSON. `reason` is one line."""

    def __init__(self, what: str, reason: str):
        super().__init__(f"{what} {reason}")
        self.what = what
        self.reason = reason


def size_text(size: int) -> str:
    return f"{size / MiB:g} MiB" if size >= MiB else f"{size:,} bytes"


def check_size(size: int, *, what: str, limit: int = MAX_BYTES) -> None:
    """DocumentError when `size` bytes is more than `limit` (also for data read only up to limit + 1)."""
    if size > limit:
        raise DocumentError(what, f"is larger than {size_text(limit)}, the most that is read of it")


def load_json(data: bytes | str, *, what: str, limit: int = MAX_BYTES) -> Any:
    """The parsed document, or DocumentError: over `limit` bytes, nested deeper than MAX_DEPTH, or not JSON.

    `what` names the document in the message ("the manifest registry/ns/img:1.0").
    """
    raw = data.encode() if isinstance(data, str) else bytes(data)
    check_size(len(raw), what=what, limit=limit)
    if _depth_exceeds(raw, MAX_DEPTH):
        raise DocumentError(what, f"is nested deeper than {MAX_DEPTH} levels")
    try:
        return json.loads(raw)
    except RecursionError:  # what the count cannot see: UTF-16 text, or a caller deep in its own stack
        raise DocumentError(what, f"is nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, an integer of too many digits
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DocumentError(what, f"is not JSON ({first[:200]})") from None


def _depth_exceeds(raw: bytes, limit: int) -> bool:
    """Whether brackets outside strings nest deeper than `limit`, counted in C-speed passes (no recursion).

    Unbalanced input is left to json.loads to refuse.
    """
    depth = 0
    for brackets in _outside_strings(raw):
        for start in range(0, len(brackets), _CHUNK):
            chunk = brackets[start:start + _CHUNK]
            closers = chunk.count(b"]") + chunk.count(b"}")
            # Only if all its openers, on top of the depth so far, pass the limit can the chunk (most cannot).
            if depth + len(chunk) - closers > limit:
                # Depth after the i-th bracket of the chunk (from 1): depth + 2 * openers so far - i.
                if depth + max(map(sub, accumulate(chunk.translate(_WEIGHTS)), count(1))) > limit:
                    return True
            depth += len(chunk) - 2 * closers
    return False


def _outside_strings(raw: bytes) -> Iterator[bytes]:
    """The brackets outside strings, window by window (a window's pieces are all the memory it takes).

    An escaped backslash, then an escaped quote, are removed first (left to right, as JSON reads them),
    so every quote left opens or closes a string; of the pieces between quotes, every other one is a
    string's inside, whose brackets do not count.
    """
    structure = raw.replace(b"\\\\", b"").replace(b'\\"', b"").translate(None, _NOT_STRUCTURE)
    in_string = False
    for start in range(0, len(structure), _WINDOW):
        pieces = structure[start:start + _WINDOW].split(b'"')
        yield b"".join(pieces[1::2] if in_string else pieces[::2])
        in_string ^= len(pieces) % 2 == 0  # an odd number of quotes in the window
