"""Invoke tasks of the connector image factory. Wiring only: the work is in ingestion_factory/."""

from __future__ import annotations

import functools
import sys
from pathlib import Path

from invoke import Collection, Exit, task

from ingestion_factory import interrupts, run_lock
from ingestion_factory import settings as settings_mod
from ingestion_factory.cli import commands
from ingestion_factory.errors import ConfigError, FactoryError

ROOT = Path(__file__).resolve().parent


def _settings(c, framework_version=None, framework=None, **overrides):
    """Settings from pyproject < invoke.yaml < INVOKE_FACTORY_* env < the flags given here; with
    `framework_version`, the framework it belongs to (or `framework`) at that supported version."""
    merged = settings_mod.plain(c.config.get("factory", {}))
    merged.update({key: value for key, value in overrides.items() if value is not None})
    settings = settings_mod.load(merged, ROOT)
    if framework_version:
        if framework_version == settings_mod.ALL_VERSIONS:
            raise ConfigError("--version all is not for this task", "name one version (`inv list` shows them)")
        name = settings_mod.framework_of_version(settings, framework_version, framework)
        settings = settings_mod.with_framework_version(settings, name, framework_version)
    return settings


def _views(c, version, framework=None, **overrides):
    """(settings, varied framework) per framework version that `--version` selects (see settings.selected_views)."""
    return settings_mod.selected_views(_settings(c, **overrides), version, framework)


VERSION_HELP = ("Framework version (one of frameworks.<name>.versions; default: the default version, the newest "
                "unless frameworks.<name>.version pins another). The framework it belongs to is found from it.")
VERSION_ALL_HELP = VERSION_HELP + " `all`: every supported version, one after the other."


SETTINGS_HELP = {
    "namespace": "Repository namespace (default: factory.namespace).",
    "registry": "Registry host[:port] in image names (default: factory.registry).",
    "python_image": "Image the bases start FROM (default: factory.python_image).",
    "tag": "Version tag (default: the framework version).",
    "ca_bundle": "CA bundle for pip/uv inside the build ('' disables; default: host bundle).",
}


NO_WAIT_HELP = ("Exit 2 at once when another run holds this output directory and namespace "
                "(default: wait for it, saying which process it is).")


def _one_run(settings, no_wait):
    """The lock that keeps a second writing run in this output directory and namespace out until the first ends."""
    command = "inv " + " ".join(sys.argv[1:]) if sys.argv[1:] else "inv"
    return run_lock.held(settings.output_path, settings.namespace, command, wait=not no_wait,
                         notify=lambda text: commands.console.print(text, markup=False, highlight=False))


REVERIFY_HELP = ("With factory.trusted_keys: smoke-test cache images even when a trusted attestation says they "
                 "passed.")
PASSPHRASE_HELP = "File holding the signing key's passphrase (or env FACTORY_SIGNING_PASSPHRASE)."


PLATFORM_HELP = ("Platform to build for (repeatable: linux/amd64, linux/arm64; default: factory.platforms). "
                 "Foreign platforms need QEMU: see docs/arm64.md.")


def reports_errors(function):
    """Turn FactoryError into a clear message and its exit code, at this one boundary."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        try:
            with interrupts.terminate_as_interrupt():
                status = function(*args, **kwargs)
        except FactoryError as exc:
            raise Exit(exc.render(), code=exc.exit_code) from None
        except KeyboardInterrupt as exc:  # Ctrl-C: 130; SIGTERM: 143 (interrupts.py)
            raise Exit(f"interrupted by {interrupts.signal_name(exc)}", code=interrupts.exit_code(exc)) from None
        if status:
            raise Exit(code=status)

    return wrapper


@task(help={
    "framework": "Framework family to build the base for (repeatable; default: factory.framework).",
    "version": VERSION_ALL_HELP,
    "force": "Rebuild even when the base is up to date.",
    "no_cache": "Do not use BuildKit's layer cache.",
    "plan": "Print what would be built and why; build nothing.",
    "cache_from": "Registry host[:port] to pull the base from instead of building it, when it holds its "
                  "inputs' tag (default: factory.cache_from).",
    "platform": PLATFORM_HELP,
    "no_wait": NO_WAIT_HELP,
    "reverify": REVERIFY_HELP,
    **SETTINGS_HELP,
}, iterable=["framework", "platform"])
@reports_errors
def build_base(c, framework=None, version=None, force=False, no_cache=False, plan=False, namespace=None,
               registry=None, python_image=None, tag=None, ca_bundle=None, cache_from=None, platform=None,
               no_wait=False, reverify=False):
    """Build the base image (framework + runtime/main.py) of a framework family."""
    if version and len(framework or []) > 1:
        raise ConfigError("--version goes with at most one --framework")
    views = _views(c, version, (framework or [None])[0], namespace=namespace, registry=registry,
                   python_image=python_image, tag=tag, ca_bundle=ca_bundle, cache_from=cache_from,
                   platforms=platform or None)
    if version and not framework:  # the base of the framework the version belongs to
        framework = sorted({varied or views[0][0].framework for _, varied in views})
    with _one_run(views[0][0], no_wait):
        return commands.build_versions(views, base_only=True, frameworks=framework or None, force=force,
                                       no_cache=no_cache, plan_only=plan, reverify=reverify)


@task(help={
    "connector": "Connector to build (repeatable; default: all). Its parents are built first.",
    "jobs": "Images built at the same time, and smoke-tested beside them (default: factory.jobs).",
    "force": "Rebuild the named connectors even when up to date.",
    "fail_fast": "Stop starting new builds after the first failure.",
    "plan": "Print what would be built and why; build nothing.",
    "no_cache": "Do not use BuildKit's layer cache.",
    "version": VERSION_ALL_HELP + " Without -c: that version's connectors.",
    "framework_version": "The same as --version (kept for scripts that use it).",
    "cache_from": "Registry host[:port] to pull images from instead of building them, when it holds their "
                  "inputs' tag (`inputs-<hash>`, written by inv push); '' turns it off (default: factory.cache_from).",
    "shard": "Build only shard K of N of the connectors (e.g. 2/4), a stable share by name; their parents "
             "come from --cache-from when there, else are built.",
    "platform": PLATFORM_HELP,
    "no_wait": NO_WAIT_HELP,
    "reverify": REVERIFY_HELP,
    **SETTINGS_HELP,
}, iterable=["connector", "platform"])
@reports_errors
def build_connectors(c, connector=None, jobs=None, force=False, fail_fast=False, plan=False, no_cache=False,
                     version=None, framework_version=None, namespace=None, registry=None, python_image=None,
                     tag=None, ca_bundle=None, cache_from=None, shard=None, platform=None, no_wait=False,
                     reverify=False):
    """Build one ingestion-connector-<name> image per directory in images/connectors/."""
    if version and framework_version and version != framework_version:
        raise ConfigError("--version and --framework-version name different versions", "give one of them")
    views = _views(c, version or framework_version, jobs=jobs, namespace=namespace, registry=registry,
                   python_image=python_image, tag=tag, ca_bundle=ca_bundle, cache_from=cache_from,
                   platforms=platform or None)
    with _one_run(views[0][0], no_wait):
        return commands.build_versions(views, connector or None, force=force, fail_fast=fail_fast,
                                       plan_only=plan, no_cache=no_cache, shard=shard, reverify=reverify)


@task(name="list", help={
    "json": "Print JSON instead of a table.",
    "matrix": "Print, as JSON, what CI fans out over: the images parents-first by stage, and the connectors "
              "of each of N shards (for `inv build-connectors --shard K/N`). Needs no engine.",
    "platform": PLATFORM_HELP,
    "version": "Only this framework version's images (default: every supported version; with --matrix: the "
               "default versions).",
}, iterable=["platform"])
@reports_errors
def list_(c, json=False, matrix=None, platform=None, version=None):
    """List every image the repository defines, per framework version: its parent and its state."""
    return commands.list_images(_settings(c, platforms=platform or None), as_json=json, matrix=matrix,
                                version=version)


@task(help={
    "framework": "Framework whose sources to derive (repeatable; default: every declared framework).",
    "prune": "Delete directories of sources the framework no longer has (only those nobody edited).",
    "check": "Change nothing; exit 1 when images/connectors/ differs from what the frameworks say.",
    "version": "One framework version, added when it is not supported yet: its base lock and image, its sources "
               "(images/base/frameworks/<fw>/<version>/catalog.toml), every connector's lock, and what appeared, "
               "vanished or failed to lock against another version. A new newest version becomes the default.",
    "no_wait": NO_WAIT_HELP,
}, iterable=["framework"])
@reports_errors
def catalog(c, framework=None, prune=False, check=False, version=None, no_wait=False):
    """Write images/connectors/<name>/ for every source the frameworks ship, read from their base images."""
    settings = _settings(c)
    with _one_run(settings, no_wait):
        return commands.catalog(settings, framework or None, prune=prune, check=check, version=version)


@task(help={
    "connector": "Image whose lock to write (repeatable; a connector, base, base-datahub or sbom-tool; "
                 "default: all). The locks it is resolved under are brought up to date first.",
    "upgrade": "Re-resolve to the newest versions the inputs allow (only the named locks when -c is given).",
    "upgrade_package": "Move only this package (repeatable) to its newest allowed version, in every lock "
                       "that holds it.",
    "check": "Change nothing; exit 1 naming each lock that no longer matches its inputs (no index is asked).",
    "jobs": "Locks resolved at the same time (default: factory.jobs).",
    "version": "Only this framework version's locks (default: every supported version's).",
    "no_wait": NO_WAIT_HELP,
}, iterable=["connector", "upgrade_package"])
@reports_errors
def lock(c, connector=None, upgrade=False, upgrade_package=None, check=False, jobs=None, version=None,
         no_wait=False):
    """Write every image's lock for every framework version: its complete package set, with hashes (uv)."""
    settings = _settings(c, jobs=jobs)
    with _one_run(settings, no_wait):
        return commands.lock(settings, connector or None, upgrade=upgrade,
                             upgrade_packages=upgrade_package or None, check=check, version=version)


@task(help={
    "connector": "Connector (or base) whose SBOM to write.",
    "output": "Where to write it ('-': stdout; default: build/reports/sbom/<name>.cdx.json).",
    "tag": "Version tag of the image (default: the framework version).",
    "version": VERSION_HELP,
})
@reports_errors
def sbom(c, connector, output=None, tag=None, version=None):
    """Write the CycloneDX SBOM an image carries (its Python and Debian packages), checked against its lock."""
    return commands.sbom(_settings(c, framework_version=version, tag=tag), connector, output)


@task(help={
    "connector": "Image to audit (repeatable: a connector, base, base-datahub, or python-image; default: the "
                 "Python image and every available image).",
    "json": "Where the JSON report goes (default: build/reports/audit-latest.json).",
    "osv": "Directory or zip of OSV records (repeatable; e.g. OSV's PyPI and Debian all.zip): match every "
           "SBOM component, offline, and write a CycloneDX VEX document.",
    "vex": "Where the VEX document goes (default: build/reports/audit-vex.cdx.json).",
    "python": "Ask the resolver which locked packages could move (--no-python: Debian and OSV only).",
    "fresh": "Re-resolve even when a resolution of the same lock is less than an hour old.",
    "version": VERSION_HELP,
}, iterable=["connector", "osv"])
@reports_errors
def audit(c, connector=None, json=None, osv=None, vex=None, python=True, fresh=False, version=None):
    """What could be fixed in each image: Debian updates, newer allowed Python packages, known vulnerabilities.
    Exit 1 when a fix is available."""
    from ingestion_factory.cli import audit as audit_cli

    return audit_cli.audit(_settings(c, framework_version=version), connector or None, json_path=json, osv_sources=osv or [], vex_path=vex,
                           python=python, fresh=fresh)


@task(help={"force": "Rebuild it even if the image exists.",
            "refresh": "Rebuild it only when the suite, -updates or -security has newer versions of its Debian "
                       "packages (a no-op otherwise); for scheduled runs.",
            "platform": PLATFORM_HELP}, iterable=["platform"])
@reports_errors
def python_image(c, force=False, refresh=False, platform=None):
    """Build the Python runtime image from Debian packages, with the suite's security and stable updates."""
    return commands.python_image(_settings(c, platforms=platform or None), force=force, refresh=refresh)


@task(help={
    "connector": "Connector to push (repeatable; default: all images). The base it is built FROM is pushed too.",
    "registry": "Registry host[:port] to push to (default: factory.registry; '' is Docker Hub).",
    "tag": "Version tag of the images to push (default: the framework version).",
    "latest": "Push `latest` along with the version and commit tags (default; never for pre-releases). "
              "--no-latest leaves `latest` in the registry alone.",
    "dry_run": "Print what would be pushed and whether it may be; push nothing, contact no registry.",
    "username": "Registry user (or env FACTORY_REGISTRY_USERNAME; default: the `docker login` entry).",
    "password_file": "File holding the registry password, '-' for stdin "
                     "(or env FACTORY_REGISTRY_PASSWORD / FACTORY_REGISTRY_PASSWORD_FILE).",
    "platform": PLATFORM_HELP + " With several, each tag becomes a manifest list of all of them.",
    "no_wait": NO_WAIT_HELP,
    "passphrase_file": PASSPHRASE_HELP + " Used when factory.signing_key is set: every pushed digest is signed.",
    "version": VERSION_HELP + " Only the default version's images carry `latest` and the commit tag.",
}, iterable=["connector", "platform"])
@reports_errors
def push(c, connector=None, registry=None, tag=None, latest=True, dry_run=False, username=None, password_file=None,
         platform=None, no_wait=False, passphrase_file=None, version=None):
    """Push verified, current images with the tags the build gave them; read back and report their digests."""
    from ingestion_factory.cli import push_command

    settings = _settings(c, framework_version=version, tag=tag, platforms=platform or None)
    with _one_run(settings, no_wait):
        return push_command.push(settings, connector or None, registry=registry, latest=latest,
                                 dry_run=dry_run, username=username, password_file=password_file,
                                 console=commands.console, passphrase_file=passphrase_file,
                                 framework=settings_mod.framework_of_version(settings, version) if version else None)


@task(help={
    "connector": "Connector to run (default: factory.demo_connector, the embedded demo).",
    "config": "Workflow config, JSON or YAML; ${NAME} / ${file:PATH} placeholders are resolved "
              "(default for the demo: factory.demo_config).",
    "pipeline_type": "OpenMetadata pipelineType passed to main.py (metadata, usage, lineage, profiler, ...).",
    "keep": "Keep the container after it exits (default: remove it).",
    "build": "Build the image first when it is missing (--no-build: fail with a hint instead).",
    "platform": "Run this platform's variant (e.g. linux/arm64, under QEMU on an amd64 host; default: the "
                "default platform's image).",
    "version": VERSION_HELP,
})
@reports_errors
def run_local(c, connector=None, config=None, pipeline_type=None, keep=False, build=True, platform=None,
              version=None):
    """Run a connector image here: host network, examples at /opt/operator, live logs, its exit code."""
    return commands.run_local(_settings(c, framework_version=version), connector, config, pipeline_type=pipeline_type, keep=keep, build=build,
                              platform=platform)


@task(help={
    "connector": "OpenMetadata connector to measure (repeatable; default: six of them).",
    "cold": "Measure cold builds (empties the BuildKit cache twice; slow). --no-cold skips it.",
    "push": "Measure bytes pushed to a throwaway local registry (needs docker-registry).",
    "output": "Where the JSON goes (default: build/reports/bench-latest.json).",
    "catalog": "Measure the whole catalog instead: its build time (cold: empty cache, bench namespace; "
               "--no-cold: your images), disk in total and per connector, no-op build and `inv list` times.",
    "cache": "Measure --cache-from instead: pull + verify of the -c images (default datahub-sqlite) and their "
             "parents from a throwaway registry, next to building them from scratch (cold: empty BuildKit "
             "cache; --no-cold: --no-cache). With --catalog: every available connector (needs an engine without "
             "other copies of the catalog, or their layers are not downloaded). With signing_key and trusted_keys "
             "set, the pull is measured without and with the trust policy.",
    "scratch": "With --cache: also build the images from scratch to compare (--no-scratch leaves it out).",
    "arm64": "Measure arm64 builds instead: the DataHub base and a connector (default datahub-sqlite), "
             "cross-installed versus installed under QEMU, each smoke-tested (needs QEMU; slow).",
    "sizes": "Measure only where the bases' bytes go (per directory, per package, per kind), their sizes next to "
             "the targets, on the images you have; no builds.",
    "baseline": "With --sizes: a namespace holding the bases built before a change; both are measured, and "
                "`--check` start-up of both, interleaved.",
}, iterable=["connector"])
@reports_errors
def bench(c, connector=None, cold=True, push=True, output=None, catalog=False, cache=False, arm64=False,
          scratch=True, sizes=False, baseline=""):
    """Measure build speed, image size, start-up and push cost next to the seed's way."""
    from ingestion_factory.cli import bench as bench_mod

    settings = _settings(c)
    target = Path(output) if output else settings.output_path / "reports" / "bench-latest.json"
    bench_mod.run(settings, connector or None, cold=cold, push=push, output=target, console=commands.console,
                  catalog=catalog, cache=cache, arm64=arm64, scratch=scratch, sizes=sizes, baseline=baseline)


@task(help={
    "connector": "Connector to bundle (repeatable; default: every available one). Its parents go in too.",
    "output": "The archive to write (written to a temp file beside it, then renamed).",
    "tag": "Version tag of the images to bundle (default: the framework version).",
    "passphrase_file": PASSPHRASE_HELP + " Used when factory.signing_key is set: the bundle is signed.",
    "version": VERSION_HELP,
}, iterable=["connector"])
@reports_errors
def bundle(c, output, connector=None, tag=None, passphrase_file=None, version=None):
    """Write verified images (shared layers once) and a checked manifest into one archive, for air-gapped sites."""
    from ingestion_factory.cli import bundle_commands

    settings = _settings(c, framework_version=version, tag=tag)
    return bundle_commands.bundle(settings, connector or None, Path(output), console=commands.console,
                                  passphrase_file=passphrase_file,
                                  framework=settings_mod.framework_of_version(settings, version) if version else None)


@task(help={
    "file": "The archive `inv bundle` wrote.",
    "push": "Also push the images to this registry (a mirror) with the same tags, after every check passed.",
    "username": "Mirror registry user (or env FACTORY_REGISTRY_USERNAME; default: the `docker login` entry).",
    "password_file": "File holding the mirror's password, '-' for stdin "
                     "(or env FACTORY_REGISTRY_PASSWORD / FACTORY_REGISTRY_PASSWORD_FILE).",
    "no_wait": NO_WAIT_HELP,
    "namespace": "Accept images for this namespace's repositories (default: factory.namespace).",
    "allow_unsigned": "With factory.trusted_keys: accept a bundle no trusted key signed (with a warning).",
    "passphrase_file": PASSPHRASE_HELP + " With --push and factory.signing_key: the mirror's digests are signed.",
})
@reports_errors
def unbundle(c, file, push=None, username=None, password_file=None, namespace=None, no_wait=False,
             allow_unsigned=False, passphrase_file=None):
    """Load a bundle: checksum, image IDs and smoke tests first; only then tag (and optionally push) the images."""
    from ingestion_factory.cli import bundle_commands

    settings = _settings(c, namespace=namespace)
    with _one_run(settings, no_wait):
        return bundle_commands.unbundle(settings, Path(file), push_to=push, username=username,
                                        password_file=password_file, console=commands.console,
                                        allow_unsigned=allow_unsigned, passphrase_file=passphrase_file)


@task(positional=["action"], help={
    "action": "generate: write a new ECDSA P-256 key pair (factory-signing.key, encrypted, and .pub).",
    "output": "Directory to write the pair into (default: build/keys).",
    "passphrase_file": PASSPHRASE_HELP,
    "force": "Replace a pair already there.",
})
@reports_errors
def keys(c, action, output=None, passphrase_file=None, force=False):
    """Signing keys for `inv push` (signing_key) and the trust policy (trusted_keys): `inv keys generate`."""
    from ingestion_factory.cli import trust_commands

    return trust_commands.keys(_settings(c), action, output, passphrase_file, force=force)


@task(positional=["connector"], help={
    "connector": "Connector whose pushed image to check (-c NAME), or an image reference "
                 "(registry/namespace/image:tag or @sha256:<digest>).",
    "registry": "Registry host[:port] of -c NAME's image (default: factory.registry).",
    "json": "Print the checks as JSON.",
    "version": VERSION_HELP + " For -c NAME: which version's image to check.",
})
@reports_errors
def verify(c, connector, registry=None, json=False, version=None):
    """Check an image's digest, signature, SLSA attestation and policy with factory.trusted_keys: exit 0 verified,
    1 not verified (naming the check), 2 bad input."""
    from ingestion_factory.cli import trust_commands

    return trust_commands.verify(_settings(c, framework_version=version), connector, registry=registry,
                                 as_json=json)


@task(help={
    "connector": "Image to rebuild and compare (repeatable: a connector, or a base such as base-datahub).",
    "keep": "Keep a rebuild that differs, tagged under a scratch namespace, to look at.",
    "version": VERSION_HELP,
    "platform": PLATFORM_HELP,
    "no_wait": NO_WAIT_HELP,
    "namespace": SETTINGS_HELP["namespace"],
    "registry": SETTINGS_HELP["registry"],
    "tag": SETTINGS_HELP["tag"],
}, iterable=["connector", "platform"])
@reports_errors
def rebuild(c, connector=None, keep=False, version=None, platform=None, no_wait=False, namespace=None,
            registry=None, tag=None):
    """Build images again from the inputs they record, with no build cache, and compare: exit 0 identical (the
    image ID), 1 different (the layers and paths that differ) or not rebuilt, 2 bad input."""
    from ingestion_factory.cli import rebuild_command

    settings = _settings(c, framework_version=version, platforms=platform or None, namespace=namespace,
                         registry=registry, tag=tag)
    with _one_run(settings, no_wait):  # no build or lock of this namespace moves the inputs meanwhile
        return rebuild_command.rebuild(settings, connector or [], console=commands.console, keep=keep)


ns = Collection(build_base, build_connectors, catalog, lock, sbom, list_, python_image, audit, push, run_local,
                bench, bundle, unbundle, keys, verify, rebuild)
ns.configure({"factory": settings_mod.pyproject_defaults(ROOT)})
