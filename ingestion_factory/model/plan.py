"""Plan: which images to build, in which order, and why (missing / inputs changed / up to date).

Each image carries a label with the hash of all its inputs. An image whose
label matches the hash computed now is up to date and is skipped without
running any build.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ..errors import ConfigError, FactoryError
from ..platforms import DEFAULT as DEFAULT_PLATFORM
from ..platforms import Platform, is_native
from ..settings import Settings, image_tags
from ..status import Status
from .catalog import CONNECTOR, Catalog, ImageSpec
from .graph import parents_first
from .lockfile import file_digest, is_lock
from .names import python_image_ref
from .results import BuildStatus, Result

# Bump when the way images are built changes in a way the input files do not show.
RECIPE_VERSION = "3"  # 2: images install their lock and carry an SBOM; 3: reproducible (SOURCE_DATE_EPOCH)
LABEL_PREFIX = "io.ingestion-factory"
LABEL_INPUTS = f"{LABEL_PREFIX}.inputs"
LABEL_PARENT = f"{LABEL_PREFIX}.parent-id"
LABEL_NAME = f"{LABEL_PREFIX}.name"
LABEL_FRAMEWORK = f"{LABEL_PREFIX}.framework"
LABEL_FRAMEWORK_VERSION = f"{LABEL_PREFIX}.framework-version"
LABEL_REVISION = "org.opencontainers.image.revision"
LABEL_SOURCE = "org.opencontainers.image.source"
# The framework version's constraints and uv overrides, as JSON (what differs from a plain pip install).
LABEL_RESOLUTION = f"{LABEL_PREFIX}.resolution"
LABEL_LOCK = f"{LABEL_PREFIX}.lock-digest"  # the content digest of the lock the image installed
LABEL_SBOM = f"{LABEL_PREFIX}.sbom"  # where the image keeps its CycloneDX SBOM
# os/architecture it was built for: the engine's image listing shows labels but not the architecture.
LABEL_PLATFORM = f"{LABEL_PREFIX}.platform"
# The SOURCE_DATE_EPOCH the image was built with: no file of its own layers, and no time in its config, is later.
LABEL_EPOCH = f"{LABEL_PREFIX}.source-date-epoch"
SBOM_PATH = "/opt/ingestion-factory/sbom.cdx.json"
LOCK_PATH = "/opt/ingestion-factory/requirements.lock"


class PlanState(Status):
    """Why an image will (or will not) be built."""

    MISSING = "missing", "yellow"
    CHANGED = "inputs changed", "yellow"
    PARENT_CHANGED = "parent changed", "yellow"
    FORCED = "forced", "yellow"
    UP_TO_DATE = "up to date", "dim"
    BLOCKED = "blocked", "bold red"


# The short names the rest of the tool uses (by name: reordering the enum must not swap them).
MISSING = PlanState.MISSING
CHANGED = PlanState.CHANGED
PARENT_CHANGED = PlanState.PARENT_CHANGED
FORCED = PlanState.FORCED
UP_TO_DATE = PlanState.UP_TO_DATE
BLOCKED = PlanState.BLOCKED


@dataclass(frozen=True)
class ImageInfo:
    id: str
    labels: dict[str, str]
    size: int
    tags: tuple[str, ...] = ()  # repository:tag references already pointing at it
    architecture: str = ""  # what the engine recorded (amd64, arm64); "" when unknown
    os: str = ""  # likewise (linux); "" when unknown
    digests: tuple[str, ...] = ()  # repository@sha256:... references (pulls and pushes)


class ImageStore(Protocol):
    def inspect(self, ref: str) -> ImageInfo | None: ...


@dataclass
class PlanItem:
    spec: ImageSpec
    ref: str  # repository:version-tag, the tag that proves the image was verified
    tags: list[str]
    state: PlanState
    reason: str
    input_hash: str | None = None  # None until the parent's image ID is known
    current: ImageInfo | None = None
    platform: Platform = DEFAULT_PLATFORM  # what it is built for; its ref and tags carry the platform's suffix
    install: str = "target"  # "target": installs run on the platform itself; "cross": on the build platform

    @property
    def needs_build(self) -> bool:
        return self.state not in (UP_TO_DATE, BLOCKED)

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass
class Plan:
    items: dict[str, PlanItem]
    order: list[str]
    python_image: str
    python_id: str | None = None  # the bases' parent, as inspected when planning
    revision: str | None = None  # the commit new images are labelled and tagged with
    platform: Platform = DEFAULT_PLATFORM
    build_python_id: str | None = None  # the build platform's Python image, for cross-installs

    def __iter__(self) -> Iterator[PlanItem]:
        return (self.items[name] for name in self.order)

    @property
    def to_build(self) -> list[PlanItem]:
        return [item for item in self if item.needs_build]


def other_version(settings: Settings) -> str:
    """The framework version of a run about a non-default one ("" for the defaults): its outputs' folder."""
    return next((f.version for f in settings.frameworks.values() if not f.is_default_version), "")


def build_logs(settings: Settings) -> Path:
    """Where builds write one log per image: logs/, in a folder of the framework version when not the default
    (a `--version all` run keeps every version's logs)."""
    return settings.output_path / "logs" / other_version(settings)


def sbom_copies(settings: Settings, platform: Platform = DEFAULT_PLATFORM) -> Path:
    """Where builds keep a copy of each image's SBOM (`inv audit` reads it): reports/sbom/, in a folder of
    the framework version when it is not the default, and of the architecture when not the default platform."""
    return (settings.output_path / "reports" / "sbom" / other_version(settings)
            / ("" if platform.is_default else platform.architecture))


def version_tag(spec: ImageSpec, settings: Settings) -> str:
    return settings.tag or spec.framework.version


def image_ref(spec: ImageSpec, settings: Settings, platform: Platform = DEFAULT_PLATFORM) -> str:
    return f"{settings.repository(spec.image_name)}:{platform.tag(version_tag(spec, settings))}"


def platform_tags(tags: list[str], platform: Platform) -> list[str]:
    """Local tags of one platform's variant: amd64 keeps them, arm64 adds `-arm64` to each."""
    return [platform.tag(tag) for tag in tags]


def install_mode(spec: ImageSpec, settings: Settings, platform: Platform) -> str:
    """"cross" when a foreign platform's packages can be installed from the build platform, else "target".

    Cross-installing needs a wheel for every package of the lock (its header says which would be built
    from source there) and no build_packages: compiling an sdist for arm64 needs arm64 compilers, so
    those connectors fall back to installing under emulation.
    """
    if platform.is_default or is_native(platform) or settings.foreign_install == "emulated":
        return "target"
    if settings.foreign_install == "cross":
        return "cross"
    if spec.build_packages or spec.lock is None:  # no lock (a spec not from discover): no header to go by
        return "target"
    try:
        header = [line for line in spec.lock.read_text().splitlines()[:12]
                  if line.startswith(f"# {platform.machine}-built-from-source:")]
    except OSError:
        return "target"
    return "cross" if header and header[0].split(":", 1)[1].strip().startswith("none") else "target"


def input_hash(spec: ImageSpec, parent_id: str, settings: Settings, platform: Platform = DEFAULT_PLATFORM,
               install: str = "target", build_python_id: str | None = None) -> str:
    """sha256 over everything that can change what an image contains."""
    digest = hashlib.sha256()
    header: dict[str, object] = {
        "recipe": RECIPE_VERSION,
        "name": spec.name,
        "kind": spec.kind,
        "framework": [spec.framework.name, spec.framework.package, spec.framework.version],
        "parent_id": parent_id,
        "requirements": list(spec.requirements),
        "source": spec.source,
        "check_modules": list(spec.check_modules),
        "os_packages": list(spec.os_packages),
        "build_packages": list(spec.build_packages),
        "build_args": list(spec.build_args),
    }
    if not platform.is_default:  # amd64 hashes stay what they were before platforms existed
        header["platform"] = [platform.name, install, build_python_id if install == "cross" else None]
    digest.update(json.dumps(header, sort_keys=True).encode())
    for path in sorted(set(spec.input_files)):
        digest.update(b"\0" + str(path.relative_to(settings.root)).encode() + b"\0")
        data = path.read_bytes()
        if is_lock(path):  # a lock counts by what it pins, not by its header (lock.content_digest)
            data = file_digest(data).encode()
        digest.update(data)
    return "sha256:" + digest.hexdigest()


def make_plan(
    catalog: Catalog,
    targets: list[str],
    store: ImageStore,
    settings: Settings,
    *,
    revision: str | None = None,
    force: bool = False,
    platform: Platform = DEFAULT_PLATFORM,
) -> Plan:
    """Decide for the targets and all their ancestors whether each must be built, and why.

    `force` rebuilds the targets themselves, not their up-to-date ancestors. One plan is for one platform.
    """
    order = parents_first(catalog.parents, targets)
    python_image = python_image_ref(settings, platform)
    python = store.inspect(python_image)
    build_python = python if platform.is_default else store.inspect(settings.python_image)
    items: dict[str, PlanItem] = {}
    for name in order:
        spec = catalog[name]
        ref = image_ref(spec, settings, platform)
        default_version = spec.framework.is_default_version
        tags = platform_tags(image_tags(version_tag(spec, settings), revision, default_version=default_version),
                             platform)
        install = install_mode(spec, settings, platform)
        current = store.inspect(ref)
        if spec.parent is None:  # built FROM the Python image: a base (discover gives connectors a parent)
            parent_id = python.id if python else None
            parent_state = None if python else BLOCKED
        else:
            parent = items[spec.parent]
            parent_id = None if parent.needs_build else (parent.current.id if parent.current else None)
            parent_state = parent.state if parent.needs_build or parent.state == BLOCKED else None
        item = PlanItem(spec=spec, ref=ref, tags=tags, state=UP_TO_DATE, reason="", current=current,
                        platform=platform, install=install)
        if parent_id:
            item.input_hash = input_hash(spec, parent_id, settings, platform, install,
                                         build_python.id if build_python else None)
        # The cross-install runs in the build platform's Python image, whether or not the parent is built
        # first; a blocked parent is the reason given then, as it is for every other child.
        cross_blocked = parent_state != BLOCKED and install == "cross" and build_python is None
        if cross_blocked:
            parent_state = BLOCKED
        if parent_state == BLOCKED:
            item.state = BLOCKED
            item.reason = (
                f"Python image {python_image if python is None else settings.python_image} is missing"
                if spec.parent is None or cross_blocked
                else f"parent {spec.parent} is blocked"
            )
        elif current is None:
            item.state, item.reason = MISSING, f"no image {ref}"
        elif parent_state is not None:
            item.state, item.reason = PARENT_CHANGED, f"parent {spec.parent} will be rebuilt"
        elif force and name in targets:
            item.state, item.reason = FORCED, "--force"
        elif current.architecture and current.architecture != platform.architecture:
            item.state, item.reason = CHANGED, f"{ref} is a {current.architecture} image, not {platform.architecture}"
        elif current.labels.get(LABEL_INPUTS) != item.input_hash:
            item.state = PARENT_CHANGED if current.labels.get(LABEL_PARENT) != parent_id else CHANGED
            item.reason = (
                "built FROM an older parent image"
                if item.state == PARENT_CHANGED
                else "Dockerfile, fragment, settings or build arguments changed"
            )
        else:
            item.reason = f"{current.id[7:19]} matches its inputs"
            # Its commit tag is the commit it was built from, not whatever HEAD is now.
            built_from = current.labels.get(LABEL_REVISION)
            item.tags = platform_tags(image_tags(version_tag(spec, settings),
                                                 built_from if built_from != "unknown" else None,
                                                 default_version=default_version), platform)
        items[name] = item
    return Plan(items=items, order=order, python_image=python_image,
                python_id=python.id if python else None, revision=revision, platform=platform,
                build_python_id=build_python.id if build_python else None)


def platform_targets(catalog: Catalog, targets: list[str], platform: Platform, settings: Settings) -> tuple[list[str], list[Result]]:
    """The targets that can exist on `platform`, and an UNAVAILABLE result for each one that cannot."""
    usable, skipped = [], []
    for name in targets:
        reason = catalog.unavailable_on(catalog[name], platform)
        if reason:
            skipped.append(Result(name=name, ref=image_ref(catalog[name], settings, platform),
                                  status=BuildStatus.UNAVAILABLE, detail=f"not on {platform}: {reason}",
                                  platform=platform.name))
        else:
            usable.append(name)
    return usable, skipped


def require_buildable(plan: Plan) -> None:
    """Refuse a plan with a blocked image (its Python image is missing), bases and connectors alike."""
    blocked = [item for item in plan if item.state == BLOCKED]
    if blocked:
        if not plan.platform.is_default and plan.python_id:  # only the build platform's image is missing
            raise ConfigError("cross-installing needs the build platform's Python image, which is missing",
                              "run `inv python-image` (or docker pull it)")
        if not plan.platform.is_default:
            raise ConfigError(
                f"the {plan.platform} Python image {plan.python_image} is not in the local engine",
                f"run `inv python-image --platform {plan.platform}` to build it from Debian packages",
            )
        raise ConfigError(
            f"the Python image {plan.python_image} is not in the local engine",
            f"run `docker pull {plan.python_image}`, or `inv python-image` to build it from Debian packages",
        )


def require_verified(items: Iterable[PlanItem], action: str = "push") -> None:
    """Refuse to `action` (push, bundle) when any image is not verified and current: the one rule for both.

    "Verified and current" means the image's version tag exists and its inputs have not changed since:
    that tag is moved only after the smoke test and the SBOM check passed.
    """
    stale = [item for item in items if item.state != UP_TO_DATE]
    if not stale:
        return
    foreign = list(dict.fromkeys(str(item.platform) for item in stale if not item.platform.is_default))
    where = (lambda item: f"{item.name} on {item.platform}") if foreign else (lambda item: item.name)
    listed = ", ".join(f"{where(item)} ({item.state})" for item in stale)
    flags = "".join(f" --platform {platform}" for platform in foreign)
    raise FactoryError(f"refusing to {action} {len(stale)} image(s) that were not built from the current inputs "
                       f"and verified: {listed}",
                       f"build first: {build_commands(list({i.name: i for i in stale}.values()), flags)}; "
                       f"then {action} again")


def build_commands(stale: list[PlanItem], flags: str = "") -> str:
    """The `inv build-*` commands that make these images current (bases only where no connector covers them)."""
    connectors = [item.name for item in stale if item.spec.kind == CONNECTOR]
    covered = {item.spec.framework.name for item in stale if item.spec.kind == CONNECTOR}
    frameworks = sorted({item.spec.framework.name for item in stale
                         if item.spec.kind != CONNECTOR and item.spec.framework.name not in covered})
    commands = []
    if frameworks:
        commands.append("`inv build-base " + " ".join(f"--framework {f}" for f in frameworks) + flags + "`")
    if connectors:
        commands.append("`inv build-connectors " + " ".join(f"-c {n}" for n in connectors) + flags + "`")
    return " and ".join(commands)
