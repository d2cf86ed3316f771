"""Shards for CI runners: a stable 1/N share of the connectors, and the matrix a CI system fans out over.

A connector's shard comes from a hash of its name alone, so adding or removing other connectors never
moves it to another runner (its cache tags and logs stay where they were). Shares are even in
expectation, not exactly: with few connectors a shard may be empty, which is a valid, quick job.
Bases are never sharded: every shard needs its parents, which come from the registry cache when
present (`--cache-from`), else are built.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from ..errors import ConfigError
from .catalog import Catalog
from .graph import parents_first

SHARD_PATTERN = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")
MAX_SHARDS = 256


@dataclass(frozen=True)
class Shard:
    index: int  # 1-based, as written: 1/3, 2/3, 3/3
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def holds(self, name: str) -> bool:
        return shard_of(name, self.count) == self.index


def parse_shard(text: str) -> Shard:
    """`K/N` with 1 <= K <= N; anything else is a ConfigError (exit 2, before anything is built)."""
    match = SHARD_PATTERN.match(str(text))
    if not match:
        raise ConfigError(f"--shard must be K/N (e.g. 2/4), got {text!r}", "K counts from 1 up to N")
    index, count = int(match.group(1)), int(match.group(2))
    if count < 1 or count > MAX_SHARDS:
        raise ConfigError(f"--shard {text}: N must be between 1 and {MAX_SHARDS}")
    if not 1 <= index <= count:
        raise ConfigError(f"--shard {text}: K must be between 1 and {count}", "shards are numbered 1/N to N/N")
    return Shard(index, count)


def parse_count(text: str | int) -> int:
    """The N of `inv list --matrix N`."""
    try:
        count = int(str(text).strip())
    except ValueError:
        raise ConfigError(f"--matrix takes a number of shards, got {text!r}") from None
    if not 1 <= count <= MAX_SHARDS:
        raise ConfigError(f"--matrix {count}: the number of shards must be between 1 and {MAX_SHARDS}")
    return count


def shard_of(name: str, count: int) -> int:
    """1..count from the first 8 bytes of sha256(name): the same on every machine and Python."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") % count + 1


def select(names: list[str], shard: Shard) -> list[str]:
    return [name for name in names if shard.holds(name)]


def matrix(catalog: Catalog, names: list[str], count: int) -> dict[str, object]:
    """What a CI system needs to fan out: the images parents-first by depth, and each shard's connectors.

    stages[0] are the bases (build once, push), later stages are connectors by how many images they are
    built FROM; `include` is a GitHub Actions matrix, one entry per shard.
    """
    order = parents_first(catalog.parents, names)
    depth: dict[str, int] = {}
    for name in order:
        parent = catalog[name].parent
        depth[name] = 0 if parent is None else depth[parent] + 1
    stages = [[name for name in order if depth[name] == level] for level in range(max(depth.values(), default=-1) + 1)]
    shards = [Shard(index, count) for index in range(1, count + 1)]
    return {
        "stages": stages,
        "bases": [spec.name for spec in catalog.bases if spec.name in depth],
        "shards": [str(shard) for shard in shards],
        "include": [{"shard": str(shard), "connectors": select(names, shard)} for shard in shards],
    }
