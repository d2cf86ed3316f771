"""The examples folder containers see at /opt/operator: its fixed host link, sample database, output folder."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import stat
from pathlib import Path

from ..errors import ConfigError

SAMPLE_DB_DIR = "sample_db"
SAMPLE_DB_SCRIPT = "schema.sql"
SAMPLE_DB_FILE = "sample.db"
OUTPUT_DIR = "output"


def ensure_link(link: Path, target: Path) -> str | None:
    """Make `link` a symlink to `target`, as DAGs expect; returns a note when an old link was replaced.

    DAGs mount a fixed host path (the seed's /tmp/openmetadata/examples), so
    the same DAG works from any checkout: the link says which one.
    """
    link, target = Path(link).expanduser(), Path(target).resolve()
    if link.is_symlink():
        previous = Path(os.readlink(link))
        if link.resolve() == target:
            return None
        # Replace atomically: a running DAG never sees the link missing.
        staging = link.with_name(f".{link.name}.{os.getpid()}")
        staging.unlink(missing_ok=True)
        staging.symlink_to(target, target_is_directory=True)
        os.replace(staging, link)
        return f"{link} pointed at {previous}; it now points at {target}"
    if link.exists():
        raise ConfigError(
            f"{link} exists and is not a symlink, so it cannot point at {target}",
            "move it away, or choose another path with factory.examples_link (INVOKE_FACTORY_EXAMPLES_LINK)",
        )
    try:
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(target, target_is_directory=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the examples link {link}: {exc}",
                          "choose a writable path with factory.examples_link (INVOKE_FACTORY_EXAMPLES_LINK)") from None
    return None


def ensure_sample_db(examples_dir: Path) -> Path | None:
    """Build sample_db/sample.db from its SQL script when missing or built from another version of it.

    The database records which script built it in its user_version (part of
    the script's hash), so a checkout's file times never force a rebuild.
    """
    folder = Path(examples_dir) / SAMPLE_DB_DIR
    script, database = folder / SAMPLE_DB_SCRIPT, folder / SAMPLE_DB_FILE
    if not script.is_file():
        return None
    sql = script.read_text(encoding="utf-8")
    stamp = script_stamp(sql)
    if database.is_file() and _user_version(database) == stamp:
        return database
    staging = database.with_name(f".{database.name}.{os.getpid()}.partial")  # concurrent runs never share it
    staging.unlink(missing_ok=True)
    try:
        connection = sqlite3.connect(staging)
        try:
            connection.executescript(sql)
            connection.execute(f"PRAGMA user_version = {stamp}")
            connection.commit()
        finally:
            connection.close()
    except sqlite3.Error as exc:
        staging.unlink(missing_ok=True)
        raise ConfigError(f"{script} does not build a database: {exc}") from None
    staging.chmod(0o644)  # read by the container's own user
    os.replace(staging, database)
    return database


def script_stamp(sql: str) -> int:
    """A positive 31-bit number derived from the script: what fits SQLite's user_version."""
    return int.from_bytes(hashlib.sha256(sql.encode()).digest()[:4], "big") & 0x7FFFFFFF


def _user_version(database: Path) -> int | None:
    try:
        connection = sqlite3.connect(f"{database.resolve().as_uri()}?mode=ro", uri=True)
        try:
            return connection.execute("PRAGMA user_version").fetchone()[0]
        finally:
            connection.close()
    except sqlite3.Error:
        return None  # not a database: rebuild it


def ensure_output_dir(examples_dir: Path) -> Path:
    """examples/output/, writable by everyone.

    Containers run as the image's user (uid 1000), exactly as under Airflow,
    not as the host user: that user must be able to write its file sink here
    whoever owns the checkout.
    """
    output = Path(examples_dir) / OUTPUT_DIR
    output.mkdir(parents=True, exist_ok=True)
    mode = stat.S_IMODE(output.stat().st_mode)
    if mode & 0o777 != 0o777:
        try:
            output.chmod(0o777)
        except PermissionError:
            raise ConfigError(f"{output} is not writable for the container's user (uid 1000)",
                              f"run `chmod 0777 {output}` as its owner") from None
    return output
