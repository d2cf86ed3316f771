"""Which Debian packages a minimal system with a few given packages consists of, as apt would choose them.

The roots are mmdebstrap's `minbase` (every Essential:yes and Priority:required package of the suite,
and apt) plus the packages asked for; then their Pre-Depends and Depends, never Recommends. Each
package is taken at its newest version across the suites (apt's candidate when every suite has the
same priority). Of alternatives (`a | b`), one already chosen wins, else the first that exists, else
the first package providing it. The build installs the result with dpkg and apt inside the new system,
which refuse a set whose dependencies are not met, so a mistake here cannot pass unnoticed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from debian.debian_support import Version

from ..errors import FactoryError
from .debian_archive import BinaryPackage

# name[:archqual] [(op version)] [arch restrictions]
_RELATION = re.compile(r"^\s*([a-z0-9][a-z0-9+.-]*)(?::[a-z0-9-]+)?\s*(?:\(\s*(<<|<=|=|>=|>>|<|>)\s*([^)\s]+)\s*\))?")


@dataclass(frozen=True)
class Relation:
    name: str
    op: str = ""
    version: str = ""

    def accepts(self, version: str | None) -> bool:
        """Whether `version` (None: a Provides without a version) meets the relation."""
        if not self.op:
            return True
        if version is None:
            return False
        have, wanted = Version(version), Version(self.version)
        # `<` and `>` are dpkg's obsolete spellings of `<=` and `>=`.
        return {"<<": have < wanted, "<": have <= wanted, "<=": have <= wanted, "=": have == wanted,
                ">=": have >= wanted, ">": have >= wanted, ">>": have > wanted}[self.op]


def relations(field: str) -> list[list[Relation]]:
    """`a (>= 1) | b, c` as [[a>=1, b], [c]]."""
    groups = []
    for group in field.split(","):
        alternatives = []
        for alternative in group.split("|"):
            match = _RELATION.match(alternative)
            if match:
                alternatives.append(Relation(match[1], match[2] or "", match[3] or ""))
        if alternatives:
            groups.append(alternatives)
    return groups


def candidates(binaries: Mapping[str, list[BinaryPackage]], architecture: str) -> dict[str, BinaryPackage]:
    """name -> the newest version for the architecture (or `all`) in any suite."""
    newest: dict[str, BinaryPackage] = {}
    for name, versions in binaries.items():
        usable = [p for p in versions if p.architecture in (architecture, "all")]
        if usable:
            newest[name] = max(usable, key=lambda p: Version(p.version))
    return newest


def minbase_roots(binaries: Mapping[str, list[BinaryPackage]], suite: str) -> list[str]:
    """What mmdebstrap's minbase installs before anything asked for: Essential:yes and Priority:required
    packages of the suite itself (not its -updates or -security), and apt."""
    roots = {name for name, versions in binaries.items()
             if any(p.suite == suite and (p.essential or p.priority == "required") for p in versions)}
    return sorted(roots | {"apt"})


class Unresolvable(FactoryError):
    """A dependency no package of the suites meets."""


def resolve(binaries: Mapping[str, list[BinaryPackage]], roots: Iterable[str], architecture: str) -> list[BinaryPackage]:
    """The roots and everything they depend on (Pre-Depends, Depends), sorted by name."""
    newest = candidates(binaries, architecture)
    providers: dict[str, list[tuple[BinaryPackage, str | None]]] = {}
    for package in newest.values():
        for [virtual] in relations(package.provides):
            providers.setdefault(virtual.name, []).append((package, virtual.version or None))
    chosen: dict[str, BinaryPackage] = {}
    queue: list[tuple[BinaryPackage, str]] = []

    def choose(package: BinaryPackage, why: str) -> None:
        if package.name not in chosen:
            chosen[package.name] = package
            queue.append((package, why))

    def met(relation: Relation) -> bool:
        package = chosen.get(relation.name)
        if package is not None and relation.accepts(package.version):
            return True
        return any(p.name in chosen and relation.accepts(version) for p, version in providers.get(relation.name, ()))

    for name in roots:
        if name not in newest:
            raise Unresolvable(f"no suite has a package named {name} for {architecture}")
        choose(newest[name], "asked for")
    while queue:
        package, _ = queue.pop(0)
        for group in relations(package.pre_depends) + relations(package.depends):
            if any(met(relation) for relation in group):
                continue
            exact = next((newest[r.name] for r in group if r.name in newest and r.accepts(newest[r.name].version)),
                         None)
            if exact is not None:
                choose(exact, package.name)
                continue
            by_name = lambda offer: offer[0].name  # noqa: E731 - deterministic choice among providers
            provided = next((p for r in group for p, version in sorted(providers.get(r.name, ()), key=by_name)
                             if r.accepts(version)), None)
            if provided is None:
                wanted = " | ".join(f"{r.name}" + (f" ({r.op} {r.version})" if r.op else "") for r in group)
                raise Unresolvable(f"{package.name} {package.version} depends on {wanted}, which no suite has "
                                   f"for {architecture}")
            choose(provided, package.name)
    return sorted(chosen.values(), key=lambda p: p.name)
