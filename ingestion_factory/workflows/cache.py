"""The registry as the build cache: an image's input hash names a tag, and a hit is pulled instead of built.

`inv push` publishes every image under `inputs-<first 32 hex digits of its input hash>` as well as its
normal tags. `inv build-connectors --cache-from REGISTRY` asks for that tag once an image's parent is
known (built or pulled), because the input hash covers the parent's image ID. A hit is pulled by the
manifest's digest and kept only when the engine's image ID is the manifest's config digest and its
labels match the plan (same inputs, same parent ID, same name); then it is smoke-tested and tagged
like a built image. Anything else (no tag, a mismatch) is a miss, and the image is built.

The input hash of a foreign platform's image covers its platform and install mode (target or cross),
so an arm64 or cross-installed image has its own cache tag. What a tag names is still whatever was
pushed there: the image's config (read from the registry before anything is pulled, and the pulled
image again) must be for the plan's OS and architecture and carry the plan's labels, or the image is
built instead, with one warning line naming why.

With `trusted_keys` set, a hit must also carry a signature and an SLSA attestation by a trusted key whose
record names these inputs, this parent and this platform (trust_check.py); such an image is not smoke-tested
again (unless --reverify): its attestation says it passed. An unsigned, untrusted or mismatched one is
built instead, with one warning line naming why.

A registry that is down or refuses access never fails a build: the first such error turns the cache
off for the rest of the run, with one warning, and everything left is built.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from ..documents import DocumentError, load_json
from ..engine.docker_engine import Engine, describe
from ..engine.registry import Credentials, Redactor, RegistryClient, display_host, is_insecure, read_credentials
from ..engine.streams import stream_error
from ..errors import FactoryError
from ..model.names import cache_tag, target_repository
from ..model.plan import LABEL_INPUTS, LABEL_NAME, LABEL_PARENT, LABEL_PLATFORM, ImageInfo, PlanItem
from ..platforms import DEFAULT as DEFAULT_PLATFORM
from ..platforms import Platform
from . import trust_check


class CacheMismatch(FactoryError):
    """The registry's image is not the one the plan asks for (never used: the image is built instead)."""


@dataclass(frozen=True)
class Hit:
    image_id: str
    ref: str  # repository:cache-tag in the registry
    digest: str  # the manifest digest it was pulled by
    bytes_pulled: int = 0
    attested: bool = False  # a trusted key signed it and attests its smoke test passed


def expected_labels(item: PlanItem, input_hash: str, parent_id: str) -> dict[str, str]:
    """The labels a pulled image must carry to stand in for a build of this plan item."""
    return {LABEL_INPUTS: input_hash, LABEL_PARENT: parent_id, LABEL_NAME: item.spec.name}


def check_config(os_name: str, architecture: str, labels: dict, platform: Platform,
                 expected: dict[str, str]) -> None:
    """Raise CacheMismatch unless an image config is for `platform` and carries the plan's labels."""
    found = f"{os_name}/{architecture}"
    if found != platform.name:
        raise CacheMismatch(f"it is a {found} image, the plan is for {platform.name}")
    # Images from before platforms existed have no platform label; their config's architecture is checked above.
    if labels.get(LABEL_PLATFORM, platform.name) != platform.name:
        raise CacheMismatch(f"label {LABEL_PLATFORM} is {labels[LABEL_PLATFORM]!r}, the plan is for {platform.name}")
    for key, value in expected.items():
        if labels.get(key) != value:
            raise CacheMismatch(f"label {key} is {labels.get(key)!r}, the plan expects {value!r}")


def check_pulled(pulled: ImageInfo, manifest_config: str | None, expected: dict[str, str],
                 platform: Platform = DEFAULT_PLATFORM) -> None:
    """Raise CacheMismatch unless the pulled image is exactly what the manifest and the plan say."""
    if not manifest_config or pulled.id != manifest_config:
        raise CacheMismatch(f"pulled image {pulled.id[:19]} is not the manifest's config {str(manifest_config)[:19]}")
    check_config(pulled.os, pulled.architecture, pulled.labels, platform, expected)


def check_registry_config(data: bytes | None, platform: Platform, expected: dict[str, str]) -> None:
    """check_config on the config blob the registry holds for a manifest (before anything is pulled)."""
    if data is None:
        raise CacheMismatch("the registry has no config for it")
    try:
        config = load_json(data, what="its config")
        labels = (config.get("config") or {}).get("Labels") or {}
        os_name, architecture = str(config.get("os", "")), str(config.get("architecture", ""))
    except DocumentError as exc:  # nested too deep, or not JSON: a mismatch like any other, one warning
        raise CacheMismatch(str(exc)) from None
    except (ValueError, AttributeError) as exc:
        raise CacheMismatch(f"its config is not an image config ({type(exc).__name__})") from None
    if not isinstance(labels, dict):
        raise CacheMismatch(f"its config's labels are {type(labels).__name__}, not a mapping")
    check_config(os_name, architecture, labels, platform, expected)


def read_pull_stream(events) -> int:
    """Bytes downloaded, from the daemon's pull stream; raises FactoryError on an error event."""
    sizes: dict[str, int] = {}
    for event in events:
        if not isinstance(event, dict):
            continue
        if failure := stream_error(event):
            raise FactoryError(failure)
        if event.get("status") == "Downloading" and event.get("id"):
            total = (event.get("progressDetail") or {}).get("total") or 0
            sizes[event["id"]] = max(sizes.get(event["id"], 0), int(total))
    return sum(sizes.values())


class RegistryCache:
    """Looks images up by input hash in one registry; turns itself off at the first registry failure."""

    def __init__(self, engine: Engine, client: RegistryClient, repository_of: Callable[[str], str], *,
                 credentials: Credentials | None = None, warn: Callable[[str], None] = print,
                 keys: tuple = ()):
        self.engine = engine
        self.client = client
        self.repository_of = repository_of  # image name -> registry/namespace/image
        self.credentials = credentials
        self.redact = Redactor(credentials.secrets if credentials else [])
        self.warn = warn
        self.lock = threading.Lock()
        self.off_reason = ""
        self.misses: list[str] = []  # "name: why", for the report
        self.keys = keys  # trusted public keys: when given, only signed, attested images are taken

    @property
    def where(self) -> str:
        return display_host(self.client.registry)

    def turn_off(self, reason: str) -> None:
        with self.lock:
            if self.off_reason:
                return
            self.off_reason = self.redact(reason)
        self.warn(f"warning: the build cache {self.where} is not usable ({self.off_reason}); "
                  f"building instead of pulling")

    def ping(self) -> bool:
        try:
            self.client.ping()
        except FactoryError as exc:
            self.turn_off(exc.message)
            return False
        return True

    def fetch(self, item: PlanItem, input_hash: str, parent_id: str) -> Hit | None:
        """The verified-by-content image for these inputs, pulled; None when the image must be built."""
        if self.off_reason:
            return None
        repository = self.repository_of(item.spec.image_name)
        tag = cache_tag(input_hash)
        try:
            manifest = self.client.manifest(repository, tag)
        except FactoryError as exc:
            self.turn_off(exc.message)
            return None
        if manifest is None:
            self._missed(item, "not in the cache")
            return None
        expected = expected_labels(item, input_hash, parent_id)
        try:
            if not manifest.config_digest:
                raise CacheMismatch("it is a manifest list, not one image")
            check_registry_config(self.client.blob(repository, manifest.config_digest), item.platform, expected)
        except CacheMismatch as exc:
            self._mismatch(item, repository, tag, exc.message)
            return None
        except FactoryError as exc:
            self.turn_off(exc.message)
            return None
        if self.keys and not self._trusted(item, repository, tag, manifest.digest, input_hash, parent_id):
            return None
        try:
            pulled = self._pull(repository, manifest.digest)
        except FactoryError as exc:
            # Pull errors are the registry's or the network's: the cache is unusable for this run.
            self.turn_off(f"pulling {repository}:{tag}: {exc.message}")
            return None
        try:
            pulled_image = self.engine.inspect(f"{repository}@{manifest.digest}")
            if pulled_image is None:
                raise CacheMismatch(f"the engine has no {repository}@{manifest.digest} after the pull")
            check_pulled(pulled_image, manifest.config_digest, expected, item.platform)
        except Exception as exc:  # CacheMismatch, or the engine lost the image
            self._mismatch(item, repository, tag, str(exc))
            self.discard(f"{repository}@{manifest.digest}")
            return None
        return Hit(pulled_image.id, f"{repository}:{tag}", manifest.digest, pulled, attested=bool(self.keys))

    def _trusted(self, item: PlanItem, repository: str, tag: str, digest: str, input_hash: str,
                 parent_id: str) -> bool:
        """Signed and attested by a trusted key, for exactly this plan item; else one warning and a miss."""
        expect = trust_check.Expectation(platforms=(str(item.platform),), input_hash=input_hash, parent_id=parent_id,
                                   image=item.spec.name)
        verdict = trust_check.check(self.client, repository, digest, self.keys, expect)
        if verdict.verified:
            return True
        why = self.redact(verdict.detail)
        self.warn(f"warning: {item.name}: {repository}:{tag} is not trusted ({why}); building it instead")
        self._missed(item, f"not trusted: {why}")
        return False

    def _pull(self, repository: str, digest: str) -> int:
        auth = self.credentials.auth_config(self.client.registry) if self.credentials else None
        try:
            # By digest: what is pulled is the manifest just read, even if the tag moves meanwhile.
            return read_pull_stream(self.engine.pull(repository, digest, auth))
        except FactoryError:
            raise
        except Exception as exc:  # the engine refused (denied, unknown manifest), a dropped connection
            raise FactoryError(self.redact(describe(exc))) from None

    def release(self, hit: Hit) -> None:
        """Drop the pull's digest reference once the image has its own tags.

        Left in place, `registry/ns/image@sha256:...` is a reference in a second repository, which keeps
        the image alive after its tags move on, and makes the engine refuse to delete it by ID.
        """
        try:
            self.engine.untag(f"{hit.ref.rpartition(':')[0]}@{hit.digest}")
        except Exception:  # already gone: nothing to release
            pass

    def discard(self, ref: str) -> None:
        """Remove a pulled image nobody tagged (a mismatch, or a failed smoke test)."""
        try:
            self.engine.remove(ref)
        except Exception:  # in use, or tagged by someone meanwhile: leave it
            pass

    def _mismatch(self, item: PlanItem, repository: str, tag: str, why: str) -> None:
        """An entry under this item's cache tag that is not this item's image: one warning, and it is built."""
        why = self.redact(why)
        self.warn(f"warning: {item.name}: {repository}:{tag} does not match the plan ({why}); building it instead")
        self._missed(item, f"{repository}:{tag} does not match: {why}")

    def _missed(self, item: PlanItem, why: str) -> None:
        with self.lock:
            self.misses.append(f"{item.name}: {why}")


def open_cache(settings, engine: Engine, registry: str, *, warn: Callable[[str], None]) -> RegistryCache | None:
    """A RegistryCache for `registry` that has answered a ping, or None (after one warning)."""
    # half-given credentials are bad input (ConfigError, exit 2); FACTORY_REGISTRY_* are for our own registry only
    credentials = read_credentials(registry, home=settings.registry)
    try:
        insecure = is_insecure(registry, engine.registry_config())
    except Exception as exc:
        warn(f"warning: the build cache {display_host(registry)} is not usable ({exc}); building instead")
        return None
    client = RegistryClient(registry, credentials, insecure=insecure, timeout=10)
    cache = RegistryCache(engine, client, lambda image_name: target_repository(settings, registry, image_name),
                          credentials=credentials, warn=warn, keys=trust_check.trusted_keys(settings))
    return cache if cache.ping() else None
