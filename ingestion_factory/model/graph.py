"""The build graph: every image is built FROM one parent (or the Python image), so the graph is a forest."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from ..errors import ConfigError


def parents_first(parent_of: Mapping[str, str | None], names: Iterable[str] | None = None) -> list[str]:
    """`names` (default: every image) and all the images they are built FROM, each after its parent.

    Images of the same depth keep the order they were met in, so plans and reports list images the
    same way on every run. A cycle is a ConfigError naming it; a parent missing from `parent_of`
    is a KeyError (the catalog rejects unknown parents first).
    """
    depth: dict[str, int] = {}
    for name in parent_of if names is None else names:
        chain: list[str] = []
        current: str | None = name
        while current is not None and current not in depth:
            if current in chain:
                cycle = chain[chain.index(current):] + [current]
                raise ConfigError(
                    f"connector parents form a cycle: {' -> '.join(cycle)}",
                    "a connector cannot be built FROM itself, directly or through others",
                )
            chain.append(current)
            current = parent_of[current]
        below = -1 if current is None else depth[current]
        for ancestor in reversed(chain):
            below += 1
            depth[ancestor] = below
    return sorted(depth, key=depth.__getitem__)  # stable: ties keep the order they were met in
