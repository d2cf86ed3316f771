"""What the unit and integration tests share: the framework versions pyproject.toml declares, a free port.

Importable from both folders because tests/conftest.py puts tests/ on sys.path.
"""

from __future__ import annotations

import socket
from pathlib import Path

from ingestion_factory.settings import load, pyproject_defaults

REPO = Path(__file__).resolve().parents[1]

_FRAMEWORKS = load(pyproject_defaults(REPO), REPO).frameworks
OM_VERSION = _FRAMEWORKS["openmetadata"].default_version  # the default: the newest
OM_VERSIONS = _FRAMEWORKS["openmetadata"].supported  # newest first
OM_OTHER_VERSIONS = tuple(v for v in OM_VERSIONS if v != OM_VERSION)
DH_VERSION = _FRAMEWORKS["datahub"].default_version


def free_port() -> int:
    """A port on 127.0.0.1 where nothing listens right now (refused connections, or one to listen on)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def upload_blob(host: str, repository: str, data: bytes) -> str:
    """Put a blob into a test registry at `host` (the distribution API's monolithic upload); its digest."""
    import hashlib

    import requests

    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    upload = requests.post(f"http://{host}/v2/{repository}/blobs/uploads/", timeout=10)
    location = upload.headers["Location"]
    location = location if location.startswith("http") else f"http://{host}{location}"
    requests.put(location + ("&" if "?" in location else "?") + f"digest={digest}", data=data,
                 timeout=10).raise_for_status()
    return digest
