"""What a lock file is, as data: its name, its package lines, and its identity (the content digest).

Resolving, writing and checking locks is workflows/lock.py; the plan needs only the identity, so it lives here.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from packaging.utils import canonicalize_name

LOCK_NAME = "requirements.lock"
LOCK_SUFFIX = ".lock"
PACKAGE_LINE = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[^\s;\\]+)")


def is_lock(path: Path) -> bool:
    """A lock file of any image or framework version (requirements.lock, locks/<version>.lock)."""
    return path.suffix == LOCK_SUFFIX


# sha256 of a lock file's bytes -> its content digest. Reading a 2.0 catalog's 120 locks costs ~0.7 s a run;
# engine/daemon.py keeps this memo on disk between runs, so a no-op build reads each lock's bytes only.
DIGEST_MEMO: dict[str, str] = {}


def file_digest(data: bytes) -> str:
    """content_digest of a lock file's bytes, remembered by their sha256 (the same bytes, the same digest)."""
    key = hashlib.sha256(data).hexdigest()
    found = DIGEST_MEMO.get(key)
    if found is None:
        found = DIGEST_MEMO[key] = content_digest(data.decode("utf-8", errors="replace"))
    return found


def content_digest(text: str) -> str:
    """sha256 of what a lock installs: each requirement with its sorted hashes, in name order.

    Header lines (comments) and the layout are left out, so a re-lock that pins the same packages with
    the same hashes has the same digest; any other line is kept, so nothing a build reads goes unseen.
    """
    entries: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        pending += " " + line.removesuffix("\\")
        if line.endswith("\\"):
            continue
        tokens = pending.split()
        pending = ""
        hashes = sorted(t for t in tokens if t.startswith("--hash="))
        requirement = " ".join(t for t in tokens if not t.startswith("--hash="))
        if match := PACKAGE_LINE.match(requirement):
            requirement = canonicalize_name(match["name"]) + requirement[len(match["name"]):]
        entries.append(" ".join([requirement, *hashes]))
    if pending.strip():
        entries.append(" ".join(pending.split()))
    return "sha256:" + hashlib.sha256("\n".join(sorted(entries)).encode()).hexdigest()
