"""One tag, several platforms: `inv push --platform linux/amd64 --platform linux/arm64`.

Each platform's verified image is pushed by the daemon under a tag of its own (`<version>-amd64`,
`<version>-arm64`); then a manifest list naming those manifests is stored under the image's plain tags
(version, commit, `latest`), read back, and every platform's entry checked against the digest its push
ended with. A client pulling `<image>:<version>` gets the variant of its architecture.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from rich.console import Console
from rich.markup import escape

from ..engine.daemon import plan_for
from ..engine.registry import Redactor, RegistryClient, display_host, is_insecure, read_credentials
from ..errors import ConfigError, FactoryError
from ..model import catalog as catalog_mod
from ..model.names import cache_tag, target_repository
from ..model.plan import UP_TO_DATE, Plan, PlanItem, platform_targets
from ..model.results import write_json
from ..platforms import Platform
from .push import (
    FAILED,
    NOT_PUSHED,
    PRESENT,
    PUSHED,
    REFUSED,
    WOULD_PUSH,
    PushError,
    Pusher,
    PushResult,
    TagResult,
    build_commands,
    push_table,
    with_retries,
)

LIST_TYPE = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_INDEX_TYPE = "application/vnd.oci.image.index.v1+json"
IMAGE_TYPE = "application/vnd.docker.distribution.manifest.v2+json"


@dataclass(frozen=True)
class Entry:
    """One platform's manifest as a manifest list names it."""

    platform: Platform
    digest: str
    size: int
    media_type: str = IMAGE_TYPE


def index_document(entries: list[Entry]) -> bytes:
    """The manifest list, serialized once: its digest is the sha256 of exactly these bytes."""
    document = {
        "schemaVersion": 2,
        "mediaType": LIST_TYPE,
        "manifests": [{"mediaType": e.media_type, "size": e.size, "digest": e.digest,
                       "platform": e.platform.index_entry()} for e in entries],
    }
    return json.dumps(document, indent=3).encode()


def platform_digests(document: dict | None) -> dict[str, str]:
    """platform name ("linux/arm64") -> digest, from a manifest list or OCI index read back."""
    found = {}
    for manifest in (document or {}).get("manifests", []):
        platform = manifest.get("platform") or {}
        found[f"{platform.get('os')}/{platform.get('architecture')}"] = manifest.get("digest", "")
    return found


def check_read_back(document: dict | None, media_type: str, expected: dict[str, str]) -> str | None:
    """Why a manifest list read back is not the one stored, or None when every platform's digest matches."""
    if media_type not in (LIST_TYPE, OCI_INDEX_TYPE):
        return f"the registry serves a {media_type or 'manifest of unknown type'}, not a manifest list"
    found = platform_digests(document)
    for platform, digest in expected.items():
        if found.get(platform) != digest:
            return f"{platform} is {found.get(platform) or 'missing'}, the push ended with {digest}"
    extra = sorted(set(found) - set(expected))
    if extra:
        return f"the list also names {', '.join(extra)}"
    return None


def plain_tags(items: list[PlanItem]) -> list[str]:
    """The tags the manifest list goes under: the default platform's, else a variant's without its suffix."""
    for item in items:
        if item.platform.is_default:
            return list(item.tags)
    first = items[0]
    return [tag.removesuffix(first.platform.suffix) for tag in first.tags]


def group(plans: list[Plan]) -> dict[str, list[PlanItem]]:
    """Image name -> its item on every platform it exists on, in the order of the platforms given."""
    grouped: dict[str, list[PlanItem]] = {}
    for plan in plans:
        for item in plan:
            grouped.setdefault(item.name, []).append(item)
    return grouped


def require_pushable(plans: list[Plan]) -> None:
    stale = [item for plan in plans for item in plan if item.state != UP_TO_DATE]
    if not stale:
        return
    listed = ", ".join(f"{item.name} on {item.platform} ({item.state})" for item in stale)
    flags = " ".join(f"--platform {p}" for p in dict.fromkeys(str(item.platform) for item in stale))
    raise FactoryError(f"refusing to push {len(stale)} image(s) that were not built from the current inputs and "
                       f"verified: {listed}",
                       f"build first: {build_commands(list({i.name: i for i in stale}.values()))} with {flags}; "
                       "then push again")


def dry_run_list(grouped: dict[str, list[PlanItem]], repositories: dict[str, str], latest: bool) -> list[PushResult]:
    results = []
    for name, items in grouped.items():
        stale = [item for item in items if item.state != UP_TO_DATE]
        results.append(PushResult(
            name, items[0].ref, repositories[name], REFUSED if stale else WOULD_PUSH,
            tags=[t for t in plain_tags(items) if latest or t != "latest"],
            reason="; ".join(f"{i.platform} {i.state}: {i.reason}" for i in stale)
            or "manifest list of " + ", ".join(str(i.platform) for i in items)))
    return results


class IndexPusher:
    """Pushes one image's platform variants and the manifest list that joins them."""

    def __init__(self, pusher: Pusher, out: Console):
        self.pusher = pusher
        self.client = pusher.client
        self.out = out

    def push_image(self, items: list[PlanItem], repository: str, tags: list[str]) -> PushResult:
        started = time.monotonic()
        result = PushResult(items[0].name, items[0].ref, repository, FAILED, tags=tags,
                            image_id=",".join(item.current.id for item in items if item.current))
        entries: list[Entry] = []
        for item in items:
            assert item.current is not None
            # Every variant under a tag of its own, amd64 too: the plain tags are the list's.
            tag = self.pusher.push_tag(item.current.id, repository, f"{tags[0]}-{item.platform.architecture}")
            result.tag_results.append(tag)
            if tag.result == FAILED:
                break
            entry = self._entry(repository, item.platform, tag)
            if entry is None:
                break
            entries.append(entry)
        if len(entries) == len(items):
            body = index_document(entries)
            expected = {e.platform.name: e.digest for e in entries}
            for tag in tags:
                result.tag_results.append(self._put_list(repository, tag, body, expected))
                if result.tag_results[-1].result == FAILED:
                    break
        pushed = {t.tag for t in result.tag_results}
        result.tag_results += [TagResult(t, f"{repository}:{t}", NOT_PUSHED) for t in tags if t not in pushed]
        self._push_cache_tag(items, repository, result)
        variants = result.tag_results[:len(items)]
        states = [t.result for t in result.tag_results]
        failures = [t for t in result.tag_results if t.result == FAILED]
        if failures:
            result.result, result.reason = FAILED, f"{failures[0].tag}: {failures[0].reason}"
        elif NOT_PUSHED in states:
            result.result = NOT_PUSHED
        else:
            result.result = PUSHED if PUSHED in states else PRESENT
        lists = [t for t in result.tag_results[len(items):] if t.digest]
        result.digest = lists[0].digest if lists else ""
        result.platforms = {str(item.platform): t.digest for item, t in zip(items, variants)}
        result.duration_s = round(time.monotonic() - started, 1)
        return result

    def _push_cache_tag(self, items: list[PlanItem], repository: str, result: PushResult) -> None:
        """The default platform's `inputs-<hash>` tag, as a single-platform push gives it (--cache-from reads it)."""
        default = next((i for i in items if i.platform.is_default and i.input_hash and i.current), None)
        if default is None or any(t.result in (FAILED, NOT_PUSHED) for t in result.tag_results):
            return
        result.tag_results.append(self.pusher.push_tag(default.current.id, repository, cache_tag(default.input_hash)))

    def _entry(self, repository: str, platform: Platform, tag: TagResult) -> Entry | None:
        """The pushed variant's manifest as a list entry (its size and type, read from the registry)."""
        try:
            manifest, _ = with_retries(lambda: self.client.manifest(repository, tag.digest),
                                       delays=self.pusher.delays, sleep=self.pusher.sleep)
        except FactoryError as exc:
            tag.result, tag.reason = FAILED, self.pusher.redact(exc.message)
            return None
        if manifest is None or manifest.digest != tag.digest:
            tag.result, tag.reason = FAILED, f"read-back: the registry has no {repository}@{tag.digest}"
            return None
        return Entry(platform, manifest.digest, manifest.size, manifest.media_type or IMAGE_TYPE)

    def _put_list(self, repository: str, tag: str, body: bytes, expected: dict[str, str]) -> TagResult:
        started = time.monotonic()
        ref = f"{repository}:{tag}"
        outcome = TagResult(tag, ref, FAILED)
        try:
            there = self.pusher._manifest_or_none(repository, tag)
            if there and not check_read_back(there.document, there.media_type, expected):
                outcome.result, outcome.digest = PRESENT, there.digest
                self.pusher._say(f"{ref}: manifest list already present ({there.digest})")
                return outcome
            media = LIST_TYPE
            digest, outcome.tries = with_retries(lambda: self.client.put_manifest(repository, tag, body, media),
                                                 delays=self.pusher.delays, sleep=self.pusher.sleep)
            back, _ = with_retries(lambda: self.client.manifest(repository, tag), delays=self.pusher.delays,
                                   sleep=self.pusher.sleep)
            if back is None:
                raise PushError(f"read-back: the registry has no {ref} after storing the manifest list")
            problem = check_read_back(back.document, back.media_type, expected)
            if problem or back.digest != digest:
                raise PushError(f"read-back of {ref}: {problem or f'digest {back.digest}, stored {digest}'}")
            outcome.result, outcome.digest = PUSHED, digest
            self.pusher._say(f"{ref}: manifest list {digest} ({', '.join(expected)}), read back")
        except FactoryError as exc:
            outcome.reason = self.pusher.redact(exc.message)
            outcome.tries = getattr(exc, "tries", outcome.tries) or 1
            self.pusher._say(f"[bold red]{escape(ref)}: failed[/] {escape(outcome.reason)}", markup=True)
        finally:
            outcome.duration_s = round(time.monotonic() - started, 1)
        return outcome


def push(settings, names: list[str] | None, *, registry: str | None, latest: bool, dry_run: bool,
         username: str | None, password_file: str | None, out: Console) -> int:
    """`inv push` with several platforms (or a foreign one): one manifest list per image and tag."""
    started = time.monotonic()
    chosen = settings.target_platforms
    target = settings.registry if registry is None else registry.strip()
    catalog = catalog_mod.discover(settings)
    if not names and catalog.broken:
        raise ConfigError(f"cannot push everything: {', '.join(sorted(catalog.broken))} cannot be built",
                          "fix those directories, or name the connectors to push with -c")
    targets = catalog.resolve(names) if names else [spec.name for spec in catalog if not spec.unavailable]
    plans, api = [], None
    for platform in chosen:
        usable, _ = platform_targets(catalog, targets, platform, settings)
        plan, api, _ = plan_for(settings, catalog, usable, platform=platform)
        plans.append(plan)
    grouped = group(plans)
    repositories = {name: target_repository(settings, target, items[0].spec.image_name)
                    for name, items in grouped.items()}
    credentials = read_credentials(target, username=username, password_file=password_file)
    redact = Redactor(credentials.secrets if credentials else [])
    report_path = settings.output_path / "reports" / "push-latest.json"
    extra = {"registry": display_host(target), "auth": credentials.describe() if credentials else "anonymous",
             "dry_run": dry_run, "platforms": [p.name for p in chosen]}
    if dry_run:
        dry_run_results = dry_run_list(grouped, repositories, latest)
        out.print(push_table(dry_run_results, f"Would push to {display_host(target)} (dry run; nothing pushed)"))
        require_pushable(plans)
        return 0
    require_pushable(plans)
    try:
        client = RegistryClient(target, credentials, insecure=is_insecure(target, api.info().get("RegistryConfig")))
        with_retries(client.ping)
    except FactoryError as exc:
        raise FactoryError(f"nothing was pushed: {redact(exc.message)}",
                           exc.hint or f"check that {display_host(target)} is up and --registry is right") from None
    out.print(f"Pushing {len(grouped)} image(s) for {', '.join(map(str, chosen))} to {display_host(target)} as "
              f"{credentials.describe() if credentials else 'anonymous'}.")
    pusher = IndexPusher(Pusher(api, client, credentials, redact=redact, out=out), out)
    results = []
    for name, items in grouped.items():
        tags = [t for t in plain_tags(items) if latest or t != "latest"]
        results.append(pusher.push_image(items, repositories[name], tags))
    out.print(push_table(results, f"Pushed to {display_host(target)} (manifest lists of "
                                  f"{', '.join(map(str, chosen))})"))
    report = write_json(report_path, results, {**extra, "duration_s": round(time.monotonic() - started, 1)})
    out.print(f"Report: {report}")
    bad = [r for r in results if r.result in (FAILED, NOT_PUSHED)]
    if bad:
        raise FactoryError(f"{len(bad)} of {len(results)} image(s) not pushed ({', '.join(r.name for r in bad)}): "
                           f"{bad[0].name}: {bad[0].reason}", f"details in {report}")
    return 0
