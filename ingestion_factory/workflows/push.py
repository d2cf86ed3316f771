"""Push verified images: refuse stale ones, read the daemon's stream, retry, read every manifest back.

Only an image that is up to date under its version tag may be pushed: that tag
is moved only after the smoke test passed, and "up to date" means its inputs
have not changed since. Its tags (version, git revision, `latest` unless a
pre-release) are exactly the ones `inv build-*` gives it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar

from ..engine.daemon import plan_for
from ..engine.docker_engine import Engine, describe
from ..engine.registry import (
    Credentials,
    Manifest,
    Redactor,
    RegistryClient,
    display_host,
    is_insecure,
    read_credentials,
)
from ..engine.streams import stream_error
from ..errors import ConfigError, FactoryError
from ..model import catalog as catalog_mod
from ..model.names import cache_tag, target_repository
from ..model.plan import UP_TO_DATE, PlanItem, platform_targets, require_verified
from ..model.results import StepResult, StepStatus, write_json
from ..platforms import DEFAULT as DEFAULT_PLATFORM
from ..platforms import Platform
from ..progress import Progress
from ..settings import Settings
from . import trust_sign
from .manifest_list import (
    IMAGE_TYPE,
    LIST_TYPE,
    OCI_INDEX_TYPE,
    Entry,
    check_read_back,
    config_platform,
    group,
    index_document,
    kept_entries,
    list_entries,
    plain_tags,
)


class PushStatus(StepStatus):
    """What happened to one tag, or one image, in a push."""

    PUSHED = "pushed", "green"
    PRESENT = "already present", "dim"
    FAILED = "failed", "bold red"
    NOT_PUSHED = "not pushed", "yellow"
    WOULD_PUSH = "would push", "cyan"  # --dry-run
    REFUSED = "refused", "bold red"  # --dry-run: not verified and current

    @property
    def failed(self) -> bool:
        return self in (PushStatus.FAILED, PushStatus.NOT_PUSHED, PushStatus.REFUSED)


# The short names this module and its tests use (by name: reordering the enum must not swap them).
PUSHED = PushStatus.PUSHED
PRESENT = PushStatus.PRESENT
FAILED = PushStatus.FAILED
NOT_PUSHED = PushStatus.NOT_PUSHED
WOULD_PUSH = PushStatus.WOULD_PUSH
REFUSED = PushStatus.REFUSED

AUTH = "auth"
TRANSIENT = "transient"
PERMANENT = "permanent"
RETRY_DELAYS_S = (1.0, 2.0, 4.0)  # waits between tries: 4 tries in all

AUTH_MARKERS = ("unauthorized", "denied", "authentication required", "no basic auth credentials", "forbidden",
                "incorrect username or password", "refused the credentials")
PERMANENT_MARKERS = ("unknown blob", "blob unknown", "manifest invalid", "manifest unknown", "name unknown",
                     "name invalid", "tag does not exist", "no such image", "unsupported")
TRANSIENT_MARKERS = ("connection reset", "connection refused", "connection aborted", "timeout", "timed out",
                     "temporarily unavailable", "service unavailable", "bad gateway", "internal server error",
                     "too many requests", "toomanyrequests", "broken pipe", "unexpected eof", "not reachable",
                     "stream ended", "tls handshake")
TRANSIENT_STATUS = re.compile(r"\b(5\d\d|429)\b")
Job = TypeVar("Job")  # what one push is about: plan items (inv push), a bundled image (inv unbundle --push)
DIGEST_STATUS = re.compile(r"digest: (sha256:[0-9a-f]{64})")


class PushError(FactoryError):
    """One push or read-back that failed; `kind` says whether trying again can help."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message, hint)
        self.kind = classify(message)


def classify(message: str) -> str:
    """AUTH (never retried, stops the run), TRANSIENT (retried with backoff) or PERMANENT."""
    text = message.lower()
    if any(marker in text for marker in AUTH_MARKERS):
        return AUTH
    if any(marker in text for marker in PERMANENT_MARKERS):
        return PERMANENT
    if any(marker in text for marker in TRANSIENT_MARKERS) or TRANSIENT_STATUS.search(text):
        return TRANSIENT
    return PERMANENT


def with_retries(action: Callable, *, delays: Iterable[float] = RETRY_DELAYS_S, sleep=time.sleep,
                 on_retry: Callable[[int, float, FactoryError], None] | None = None):
    """Run action; on a transient FactoryError wait and try again. Returns (value, tries)."""
    waits = list(delays)
    tries = 0
    while True:
        tries += 1
        try:
            return action(), tries
        except FactoryError as exc:
            if classify(exc.message) != TRANSIENT or tries > len(waits):
                exc.tries = tries
                raise
            delay = waits[tries - 1]
            if on_retry:
                on_retry(tries, delay, exc)
            sleep(delay)


@dataclass
class StreamOutcome:
    digest: str
    size: int | None = None
    layers_pushed: int = 0
    layers_present: int = 0


def read_push_stream(events: Iterable[dict], on_layer: Callable[[int, int], None] | None = None) -> StreamOutcome:
    """The digest a push ended with; raises PushError on any error event.

    The daemon answers a push with HTTP 200 and then reports failures (denied,
    unknown blob, manifest invalid, registry unreachable) inside the stream, so
    every event is read.
    """
    digest, size = None, None
    layers: dict[str, str] = {}
    for event in events:
        if not isinstance(event, dict):
            continue
        if failure := stream_error(event):
            raise PushError(failure)
        aux = event.get("aux") or {}
        if aux.get("Digest"):
            digest, size = aux["Digest"], aux.get("Size")
            continue
        status = str(event.get("status") or "")
        found = DIGEST_STATUS.search(status)
        if found and not digest:
            digest = found.group(1)
        if event.get("id") and status:
            layers[event["id"]] = status
            if on_layer:
                done = sum(1 for s in layers.values() if s in ("Pushed", "Layer already exists") or
                           s.startswith("Mounted from"))
                on_layer(done, len(layers))
    if not digest:
        raise PushError("the push stream ended without a digest")
    return StreamOutcome(
        digest=digest,
        size=size,
        layers_pushed=sum(1 for s in layers.values() if s == "Pushed"),
        layers_present=sum(1 for s in layers.values() if s == "Layer already exists" or s.startswith("Mounted")),
    )


# --- what to push ------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class TagResult(StepResult):
    """One tag's push (its name is the tag)."""

    JSON_KEYS = ("tag=name", "ref", "result=status", "digest", "reason=detail", "tries", "duration_s", "kept")

    ref: str
    status: PushStatus
    digest: str = ""
    tries: int = 0
    kept: dict[str, str] = field(default_factory=dict)  # list entries kept from the tag: platform -> digest

    @property
    def tag(self) -> str:
        return self.name


@dataclass(frozen=True, kw_only=True)
class PushResult(StepResult):
    """One image's push: its tags' results summed up (summary_status), and its signatures."""

    JSON_KEYS = ("name", "image", "repository", "result=status", "tags", "digest", "image_id", "reason=detail",
                 "duration_s", "tag_results", "platforms", "signed")

    image: str  # the verified local image, repository:version-tag
    repository: str  # where it goes, without tag
    status: PushStatus
    tags: list[str] = field(default_factory=list)
    digest: str = ""
    image_id: str = ""
    tag_results: list[TagResult] = field(default_factory=list)
    platforms: dict[str, str] = field(default_factory=dict)  # platform -> its variant's digest (manifest lists)
    signed: dict[str, str] = field(default_factory=dict)  # digest -> "signed" / "present" (signing_key set)


@dataclass(frozen=True)
class PushRun:
    """What a push did: one result per image, the table's title, the report written, and the error the
    command ends with (None: every image pushed or already there). The command layer shows it."""
    results: list[PushResult]
    title: str
    report: Path | None = None
    failure: FactoryError | None = None


def select_tags(item: PlanItem, latest: bool = True) -> list[str]:
    """The tags the build gave this image; `latest=False` (--no-latest) leaves `latest` where it is."""
    return [tag for tag in item.tags if latest or tag != "latest"]


def publish_tags(item: PlanItem, latest: bool = True) -> list[str]:
    """The build's tags, then the cache tag of its input hash (`inputs-<hash>`, see cache.py) for --cache-from."""
    tags = select_tags(item, latest)
    return tags + [cache_tag(item.input_hash)] if item.input_hash else tags


# --- pushing -----------------------------------------------------------------------------------


class Pusher:
    def __init__(self, engine: Engine, client: RegistryClient, credentials: Credentials | None, *, redact: Redactor,
                 progress: Progress, delays: Iterable[float] = RETRY_DELAYS_S, sleep=time.sleep):
        self.engine = engine
        self.client = client
        self.credentials = credentials
        self.redact = redact
        self.progress = progress
        self.delays = tuple(delays)
        self.sleep = sleep

    def push_image(self, item: PlanItem, repository: str, tags: list[str]) -> PushResult:
        """Every tag of one image, in order; after a failed tag the rest are not pushed."""
        assert item.current is not None
        return self.push_id(item.name, item.ref, item.current.id, repository, tags)

    def push_id(self, name: str, ref: str, image_id: str, repository: str, tags: list[str]) -> PushResult:
        """push_image for an image known by its ID (inv unbundle --push)."""
        started = time.monotonic()
        tag_results: list[TagResult] = []
        for tag in tags:
            if any(t.status == FAILED for t in tag_results):
                tag_results.append(TagResult(name=tag, ref=f"{repository}:{tag}", status=NOT_PUSHED))
            else:
                tag_results.append(self.push_tag(image_id, repository, tag))
        return _summarise(PushResult(name=name, image=ref, repository=repository, status=FAILED, tags=tags,
                                     image_id=image_id, tag_results=tag_results,
                                     duration_s=round(time.monotonic() - started, 1)))

    def push_tag(self, image_id: str, repository: str, tag: str) -> TagResult:
        started = time.monotonic()
        ref = f"{repository}:{tag}"
        status, digest, tries, detail = FAILED, "", 0, ""
        try:
            there = self._present(repository, tag, image_id)
            if there:
                status, digest = PRESENT, there.digest
                self.say(f"{ref}: already present ({there.digest})")
            else:
                self.engine.tag(image_id, repository, tag)
                self.say(f"{ref}: pushing")
                pushed, tries = with_retries(lambda: self._push_once(repository, tag), delays=self.delays,
                                             sleep=self.sleep, on_retry=self._retrying(ref))
                back, _ = with_retries(lambda: self.client.manifest(repository, tag), delays=self.delays,
                                       sleep=self.sleep, on_retry=self._retrying(f"{ref} (read-back)"))
                if back is None:
                    raise PushError(f"read-back: the registry has no {ref} after the push")
                if back.digest != pushed.digest:
                    raise PushError(f"read-back: {display_host(self.client.registry)} serves {back.digest} for "
                                    f"{ref}, but the push ended with {pushed.digest}")
                status, digest = PUSHED, pushed.digest
                self.say(f"{ref}: pushed {pushed.digest} ({pushed.layers_pushed} layer(s) uploaded, "
                          f"{pushed.layers_present} already there), read back")
        except FactoryError as exc:
            detail = self.redact(exc.message)
            tries = getattr(exc, "tries", tries) or 1
            self.fail(f"{ref}: failed {detail}")
        return TagResult(name=tag, ref=ref, status=status, digest=digest, detail=detail, tries=tries,
                         duration_s=round(time.monotonic() - started, 1))

    def _present(self, repository: str, tag: str, image_id: str) -> Manifest | None:
        """The manifest under `tag` when it is this image's and the registry holds it by its digest.

        The digest is the body's own sha256 (registry.py); reading it back by that digest makes sure the
        registry stores those bytes (a body made up for the tag read is not signed), and the config blob is
        read and hashed, so the image ID it names is the registry's content, not a claim.
        """
        there = self._manifest_or_none(repository, tag)
        if not there or there.config_digest != image_id:
            return None
        try:
            held = self.client.manifest(repository, there.digest)
            config = self.client.blob(repository, image_id) if held else None
        except FactoryError:
            return None
        return there if held and held.config_digest == image_id and config is not None else None

    def _manifest_or_none(self, repository: str, tag: str) -> Manifest | None:
        """What the tag holds now; any problem reading it just means "push it"."""
        try:
            return self.client.manifest(repository, tag)
        except FactoryError:
            return None

    def _push_once(self, repository: str, tag: str) -> StreamOutcome:
        auth = self.credentials.auth_config(self.client.registry) if self.credentials else None
        try:
            with self.progress.status(f"pushing {repository}:{tag}") as update:
                return read_push_stream(self.engine.push(repository, tag, auth), on_layer=lambda done, total: update(
                    f"pushing {repository}:{tag}: {done}/{total} layers"))
        except PushError:
            raise
        except Exception as exc:  # the engine refused, a dropped connection to the daemon, a read timeout
            raise PushError(self.redact(describe(exc))) from None

    def _retrying(self, what: str):
        def announce(tries: int, delay: float, exc: FactoryError) -> None:
            self.progress.warn(self.redact(f"{what}: {exc.message}; try {tries + 1} in {delay:.0f}s"))

        return announce

    def say(self, text: str) -> None:
        self.progress.say(self.redact(text))

    def fail(self, text: str) -> None:
        self.progress.fail(self.redact(text))


class IndexPusher:
    """Pushes one image's platform variants and the manifest list that joins them.

    `covers` names the platforms this push is for (default: those of the images given). A plain tag's
    entries for any other platform are kept in the list stored under it (manifest_list.kept_entries).
    """

    def __init__(self, pusher: Pusher, covers: Iterable[str] = ()):
        self.pusher = pusher
        self.client = pusher.client
        self.covers = set(covers)

    def push_image(self, items: list[PlanItem], repository: str, tags: list[str]) -> PushResult:
        started = time.monotonic()
        tag_results: list[TagResult] = []
        platforms: dict[str, str] = {}  # only a variant that was pushed and read back
        entries: list[Entry] = []
        for item in items:
            assert item.current is not None
            # Every variant under a tag of its own, amd64 too: the plain tags are the list's.
            tag = self.pusher.push_tag(item.current.id, repository, f"{tags[0]}-{item.platform.architecture}")
            entry, tag = self._entry(repository, item.platform, tag) if tag.status != FAILED else (None, tag)
            tag_results.append(tag)
            if entry is None:
                break
            entries.append(entry)
            platforms[str(item.platform)] = entry.digest
        if len(entries) == len(items):
            covered = self.covers | {str(item.platform) for item in items}
            for tag_name in tags:
                tag_results.append(self._put_list(repository, tag_name, entries, covered))
                if tag_results[-1].status == FAILED:
                    break
        pushed = {t.tag for t in tag_results}
        tag_results += [TagResult(name=t, ref=f"{repository}:{t}", status=NOT_PUSHED) for t in tags if t not in pushed]
        tag_results += self._push_cache_tag(items, repository, tag_results)
        status, detail = summary_status(tag_results)
        if status in (PUSHED, PRESENT):
            kept = sorted({platform for t in tag_results for platform in t.kept})
            detail = f"kept {', '.join(kept)} from the registry (not in this push)" if kept else ""
        lists = [t for t in tag_results[len(items):] if t.digest]
        return PushResult(name=items[0].name, image=items[0].ref, repository=repository, status=status, detail=detail,
                          tags=tags, digest=lists[0].digest if lists else "",
                          image_id=",".join(item.current.id for item in items if item.current),
                          tag_results=tag_results, platforms=platforms,
                          duration_s=round(time.monotonic() - started, 1))

    def _push_cache_tag(self, items: list[PlanItem], repository: str, done: list[TagResult]) -> list[TagResult]:
        """The default platform's `inputs-<hash>` tag, as a single-platform push gives it (--cache-from reads it)."""
        default = next((i for i in items if i.platform.is_default and i.input_hash and i.current), None)
        if default is None or default.current is None or any(t.status in (FAILED, NOT_PUSHED) for t in done):
            return []
        return [self.pusher.push_tag(default.current.id, repository, cache_tag(default.input_hash))]

    def _entry(self, repository: str, platform: Platform, tag: TagResult) -> tuple[Entry | None, TagResult]:
        """The pushed variant's manifest as a list entry (its size and type, read from the registry); None and the
        tag failed when the registry does not serve it."""
        try:
            manifest, _ = with_retries(lambda: self.client.manifest(repository, tag.digest),
                                       delays=self.pusher.delays, sleep=self.pusher.sleep)
        except FactoryError as exc:
            return None, replace(tag, status=FAILED, detail=self.pusher.redact(exc.message))
        if manifest is None or manifest.digest != tag.digest:
            return None, replace(tag, status=FAILED, detail=f"read-back: the registry has no {repository}@{tag.digest}")
        return Entry(platform, manifest.digest, manifest.size, manifest.media_type or IMAGE_TYPE), tag

    def _put_list(self, repository: str, tag: str, pushed: list[Entry], covered: set[str]) -> TagResult:
        started = time.monotonic()
        ref = f"{repository}:{tag}"
        status, digest, tries, detail = FAILED, "", 0, ""
        kept_digests: dict[str, str] = {}
        try:
            there, _ = with_retries(lambda: self.client.manifest(repository, tag), delays=self.pusher.delays,
                                    sleep=self.pusher.sleep)
            kept = [self._still_served(repository, entry)
                    for entry in kept_entries(pushed, self._entries_under(repository, there), covered)]
            entries = pushed + kept
            kept_digests = {entry.platform.name: entry.digest for entry in kept}
            body = index_document(entries)
            expected = {e.platform.name: e.digest for e in entries}
            if there and not check_read_back(there.document, there.media_type, expected) \
                    and held(self.client, repository, there.digest):
                status, digest = PRESENT, there.digest
                self.pusher.say(f"{ref}: manifest list already present ({there.digest})")
            else:
                media = LIST_TYPE
                stored, tries = with_retries(lambda: self.client.put_manifest(repository, tag, body, media),
                                             delays=self.pusher.delays, sleep=self.pusher.sleep)
                back, _ = with_retries(lambda: self.client.manifest(repository, tag), delays=self.pusher.delays,
                                       sleep=self.pusher.sleep)
                if back is None:
                    raise PushError(f"read-back: the registry has no {ref} after storing the manifest list")
                problem = check_read_back(back.document, back.media_type, expected)
                if problem or back.digest != stored:
                    raise PushError(f"read-back of {ref}: {problem or f'digest {back.digest}, stored {stored}'}")
                status, digest = PUSHED, stored
                self.pusher.say(f"{ref}: manifest list {stored} ({', '.join(expected)}), read back"
                                + (f"; kept {', '.join(kept_digests)} from the tag (not in this push)" if kept else ""))
        except FactoryError as exc:
            detail = self.pusher.redact(exc.message)
            tries = getattr(exc, "tries", tries) or 1
            self.pusher.fail(f"{ref}: failed {detail}")
        return TagResult(name=tag, ref=ref, status=status, digest=digest, detail=detail, tries=tries,
                         duration_s=round(time.monotonic() - started, 1), kept=kept_digests)


    def _entries_under(self, repository: str, there: Manifest | None) -> list[Entry]:
        """What a tag holds now, as list entries: a list's entries, or a single image as its platform's (from
        its config's `os`/`architecture`; the client checks the blob against its digest)."""
        if there is None:
            return []
        if there.media_type in (LIST_TYPE, OCI_INDEX_TYPE):
            return list_entries(there.document)
        if not there.config_digest:
            return []
        config, _ = with_retries(lambda: self.client.blob(repository, there.config_digest),
                                 delays=self.pusher.delays, sleep=self.pusher.sleep)
        platform = config_platform(config)
        if platform is None:
            raise PushError(f"{repository}: cannot tell the platform of the image its tag holds ({there.digest}): "
                            f"its config names none")
        return [Entry(platform, there.digest, there.size, there.media_type or IMAGE_TYPE)]

    def _still_served(self, repository: str, entry: Entry) -> Entry:
        """A kept entry, read again by its digest (the client checks a manifest against the sha256 of its
        bytes): a list never names a manifest the registry does not hold, and records its true size."""
        manifest, _ = with_retries(lambda: self.client.manifest(repository, entry.digest),
                                   delays=self.pusher.delays, sleep=self.pusher.sleep)
        if manifest is None or manifest.digest != entry.digest:
            raise PushError(f"cannot keep {entry.platform} in the list: the registry does not serve its "
                            f"{repository}@{entry.digest} (manifest unknown)")
        return Entry(entry.platform, manifest.digest, manifest.size, manifest.media_type or entry.media_type)


def holds_list(client: RegistryClient, repository: str, tag: str) -> bool:
    """Whether the tag names a manifest list now (a problem reading it: no, and the push goes on as usual)."""
    try:
        there = client.manifest(repository, tag)
    except FactoryError:
        return False
    return there is not None and there.media_type in (LIST_TYPE, OCI_INDEX_TYPE)


def held(client: RegistryClient, repository: str, digest: str) -> bool:
    """Whether the registry serves `digest` when asked by it (the client hashes what it reads)."""
    try:
        return client.manifest(repository, digest) is not None
    except FactoryError:
        return False


def push_in_turn(jobs: Iterable[Job], push_one: Callable[[Job], PushResult],
                 not_pushed: Callable[[Job, str], PushResult]) -> list[PushResult]:
    """Push each job in turn (`inv push`, `inv unbundle --push`): after bad credentials, or a registry that
    stayed unreachable through its retries, the rest are not tried (each would spend its retries failing too)."""
    results: list[PushResult] = []
    stopped_by: PushResult | None = None
    for job in jobs:
        if stopped_by:
            results.append(not_pushed(job, f"stopped after {stopped_by.name} failed"))
            continue
        results.append(push_one(job))
        if stops_the_run(results[-1]):
            stopped_by = results[-1]
    return results


def stops_the_run(result: PushResult) -> bool:
    """Bad credentials or a registry that stayed unreachable: the images after it cannot succeed either."""
    return result.status == FAILED and classify(result.detail) in (AUTH, TRANSIENT)


def summary_status(tag_results: list[TagResult]) -> tuple[PushStatus, str]:
    """One image's result from its tags' (the one rule for single images and manifest lists):
    failed > not pushed > pushed > already present; a failure's reason names its tag."""
    states = [t.status for t in tag_results]
    failures = [t for t in tag_results if t.status == FAILED]
    if failures:
        return FAILED, f"{failures[0].tag}: {failures[0].detail}"
    if NOT_PUSHED in states:
        return NOT_PUSHED, ""
    return (PUSHED if PUSHED in states else PRESENT), ""


def _summarise(result: PushResult) -> PushResult:
    """One result per image from its tags: failed > not pushed > pushed > already present."""
    digests = [t.digest for t in result.tag_results if t.digest]
    status, detail = summary_status(result.tag_results)
    if len(set(digests)) > 1:  # one image pushed to one repository has one manifest
        detail = (detail + "; " if detail else "") + "tags hold different digests"
    return replace(result, digest=digests[0] if digests else "", status=status, detail=detail)


def push(settings: Settings, names: list[str] | None = None, *, registry: str | None = None, latest: bool = True,
         dry_run: bool = False, username: str | None = None, password_file: str | None = None,
         progress: Progress, passphrase_file: str | None = None, framework: str | None = None) -> PushRun:
    """`inv push`: the named images (or every available one; of `framework` only, as `--version` asks) and
    the bases they need, to `registry`
    (default factory.registry), on every target platform.

    The default platform alone: each image under its build's tags and its `inputs-<hash>` cache tag.
    Several platforms (or a foreign one): each platform's variant under `<version>-<arch>`, then one
    manifest list per plain tag (see manifest_list.py).
    """
    started = time.monotonic()
    chosen = settings.target_platforms
    as_lists = chosen != (DEFAULT_PLATFORM,)
    target = settings.registry if registry is None else registry.strip()
    catalog = catalog_mod.discover(settings)
    if not names and catalog.broken:
        # "Everything" includes directories that cannot even be built: say so rather than skip them.
        raise ConfigError(f"cannot push everything: {', '.join(sorted(catalog.broken))} cannot be built",
                          "fix those directories, or name the connectors to push with -c")
    # "Everything" is what `inv build-connectors` builds: unavailable connectors have no image to push.
    targets = catalog.resolve(names) if names else [spec.name for spec in catalog if not spec.unavailable
                                                    and framework in (None, spec.framework.name)]
    plans, engine = [], None
    for platform in chosen:
        usable, _ = platform_targets(catalog, targets, platform, settings)
        plan, engine = plan_for(settings, catalog, usable, platform=platform)
        plans.append(plan)
    jobs = []  # (variants of one image, repository, tags)
    for items in group(plans).values():
        tags = [t for t in plain_tags(items) if latest or t != "latest"] if as_lists else publish_tags(items[0], latest)
        jobs.append((items, target_repository(settings, target, items[0].spec.image_name), tags))
    credentials = read_credentials(target, username=username, password_file=password_file)
    report_path = settings.output_path / "reports" / "push-latest.json"
    extra = {"registry": display_host(target), "auth": credentials.describe() if credentials else "anonymous",
             "dry_run": dry_run, **({"platforms": [p.name for p in chosen]} if as_lists else {})}
    kind = f" (manifest lists of {', '.join(map(str, chosen))})" if as_lists else ""

    if dry_run:
        results = [_would_push(items, repository, tags, as_lists) for items, repository, tags in jobs]
        signing = ", each digest signed" if settings.signing_key else ""
        title = f"Would push to {display_host(target)}{kind}{signing} (dry run; nothing pushed)"
        try:
            require_verified([item for plan in plans for item in plan], "push")
        except FactoryError as exc:
            return PushRun(results, title, failure=exc)
        return PushRun(results, title)

    require_verified([item for plan in plans for item in plan], "push")
    signer = trust_sign.signer_from(settings, passphrase_file)  # opened now: a wrong passphrase pushes nothing
    results: list[PushResult] = []
    progress.say(f"Pushing {len(jobs)} image(s){' for ' + ', '.join(map(str, chosen)) if as_lists else ''} to "
              f"{display_host(target)} as {credentials.describe() if credentials else 'anonymous'}"
              + (f", signing with {settings.signing_key} (key id {signer.public.keyid[:16]})." if signer else "."))
    try:
        pusher = connect(engine, target, credentials, progress)
    except FactoryError:
        results = [_not_pushed(items, repository, tags, "registry check failed") for items, repository, tags in jobs]
        write_json(report_path, results, {**extra, "duration_s": round(time.monotonic() - started, 1)})
        raise
    index_pusher = IndexPusher(pusher, covers=[p.name for p in chosen])

    def push_one(job) -> PushResult:
        items, repository, tags = job
        if as_lists:
            result = index_pusher.push_image(items, repository, tags)
        elif holds_list(pusher.client, repository, tags[0]):
            # Another push made the tag a manifest list (arm64 too): this platform's image joins it, in its place,
            # instead of replacing it (which would leave the other platforms' pulls broken).
            result = index_pusher.push_image(items, repository, [t for t in plain_tags(items) if t in tags])
        else:
            result = pusher.push_image(items[0], repository, tags)
        if signer and result.status in (PUSHED, PRESENT):
            result = _sign(pusher, signer, engine, items, result)
        return result

    results = push_in_turn(jobs, push_one, lambda job, why: _not_pushed(*job, why))
    report = write_json(report_path, results, {**extra, "duration_s": round(time.monotonic() - started, 1)})
    bad = [r for r in results if r.status in (FAILED, NOT_PUSHED)]
    failure = None
    if bad:
        good = [r.name for r in results if r.status in (PUSHED, PRESENT)]
        first = next((r for r in bad if r.status == FAILED), bad[0])
        failure = FactoryError(
            f"{len(bad)} of {len(results)} image(s) not pushed ({', '.join(r.name for r in bad)}): "
            f"{first.name}: {first.detail}",
            f"pushed: {', '.join(good) if good else 'none'}; details in {report}",
        )
    return PushRun(results, f"Pushed to {display_host(target)}{kind}", report, failure)


def _sign(pusher: Pusher, signer, engine: Engine, items: list[PlanItem], result: PushResult) -> PushResult:
    """Sign every digest of a pushed image (trust_sign.py); a failure to sign fails the image's push."""
    signed_digests = dict(result.signed)
    try:
        for signed in trust_sign.sign_pushed(pusher.client, signer, engine, items, result.repository, result.digest,
                                             result.platforms):
            signed_digests[signed.digest] = signed.signature if signed.signature == signed.attestation else "signed"
            pusher.say(f"{result.repository}@{signed.digest}: signature {signed.signature}, "
                        f"attestation {signed.attestation}")
    except FactoryError as exc:
        detail = pusher.redact(f"signing: {exc.message}")
        pusher.fail(f"{result.repository}: signing failed {detail}")
        return replace(result, signed=signed_digests, status=FAILED, detail=detail)
    return replace(result, signed=signed_digests)


def _would_push(items: list[PlanItem], repository: str, tags: list[str], as_list: bool) -> PushResult:
    """--dry-run: what would be pushed, or why an image would be refused."""
    stale = [item for item in items if item.state != UP_TO_DATE]
    where = (lambda item: f"{item.platform} ") if as_list else (lambda item: "")
    reason = "; ".join(f"{where(i)}{i.state}: {i.reason}" for i in stale)
    if not reason and as_list:
        reason = "manifest list of " + ", ".join(str(i.platform) for i in items)
    return PushResult(name=items[0].name, image=items[0].ref, repository=repository,
                      status=REFUSED if stale else WOULD_PUSH, tags=tags,
                      image_id=",".join(i.current.id for i in items if i.current), detail=reason)


def connect(engine: Engine, target: str, credentials: Credentials | None, progress: Progress) -> Pusher:
    """A Pusher for a registry that answered and took the credentials; else FactoryError "nothing was pushed"."""
    redact = Redactor(credentials.secrets if credentials else [])
    try:
        registry_client = RegistryClient(target, credentials,
                                         insecure=is_insecure(target, engine.registry_config()))
        with_retries(registry_client.ping, on_retry=lambda tries, delay, exc: progress.warn(
            f"{redact(exc.message)}; try {tries + 1} in {delay:.0f}s"))
    except FactoryError as exc:
        raise FactoryError(f"nothing was pushed: {redact(exc.message)}",
                           exc.hint or f"check that {display_host(target)} is up and --registry is right") from None
    return Pusher(engine, registry_client, credentials, redact=redact, progress=progress)


def _not_pushed(items: list[PlanItem], repository: str, tags: list[str], reason: str) -> PushResult:
    return PushResult(name=items[0].name, image=items[0].ref, repository=repository, status=NOT_PUSHED, tags=tags,
                      image_id=",".join(i.current.id for i in items if i.current), detail=reason,
                      tag_results=[TagResult(name=tag, ref=f"{repository}:{tag}", status=NOT_PUSHED) for tag in tags])
