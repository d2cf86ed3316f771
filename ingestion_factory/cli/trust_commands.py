"""`inv keys generate` and `inv verify`: what they print and their exit codes (the work is in workflows/trust_check.py)."""

from __future__ import annotations

from pathlib import Path

from rich.markup import escape
from rich.table import Table

from ..engine import signing
from ..engine.daemon import plan_for
from ..engine.docker_engine import DockerEngine
from ..engine.registry import RegistryClient, is_insecure, read_credentials
from ..errors import ConfigError, FactoryError
from ..model import catalog as catalog_mod
from ..model.names import target_repository
from ..model.plan import version_tag
from ..settings import Settings
from ..workflows import trust_check
from .commands import console

DEFAULT_KEY_DIR = "keys"  # under the output directory (build/, which git ignores)
DOCKER_DEFAULT_INSECURE = {"InsecureRegistryCIDRs": ["127.0.0.0/8"]}  # the daemon's default, without a daemon


def keys(settings: Settings, action: str, output: str | None = None, passphrase_file: str | None = None,
         force: bool = False) -> int:
    if action != "generate":
        raise ConfigError(f"unknown keys action {action!r}", "the one action is: inv keys generate")
    directory = Path(output) if output else settings.output_path / DEFAULT_KEY_DIR
    private, public = signing.write_key_pair(directory, signing.read_passphrase(passphrase_file), force=force)
    key = signing.load_public_key(public)
    console.print(f"Wrote {private} (ECDSA P-256, encrypted; keep it secret) and {public} (key id {key.keyid[:16]}).",
                  markup=False)
    console.print("To sign on `inv push` and trust these signatures, put in invoke.yaml:\n"
                  f"  factory:\n    signing_key: {private}\n    trusted_keys: {public}\n"
                  f"and give the passphrase in {signing.ENV_PASSPHRASE} (or --passphrase-file).", markup=False)
    return 0


def verify(settings: Settings, target: str, *, registry: str | None = None, as_json: bool = False) -> int:
    """Check an image's digest, signature, attestation and policy; 0 verified, 1 not, 2 bad input."""
    keys = trust_check.trusted_keys(settings)
    trust_check.require_keys(keys, "inv verify")
    platforms = tuple(p.name for p in settings.target_platforms)
    if trust_check.looks_like_image(target):
        ref = trust_check.parse_reference(target)
        expect = trust_check.image_expectation(ref, settings)
    else:
        ref, expect = _connector_reference(settings, target, registry, platforms)
    # FACTORY_REGISTRY_* are the factory registry's (as for --cache-from): an image elsewhere never gets them.
    credentials = read_credentials(ref.registry, home=settings.registry)
    client = RegistryClient(ref.registry, credentials, insecure=_insecure(ref.registry), timeout=15)
    verdicts = trust_check.check_reference(client, ref, keys, expect)
    if as_json:
        print(trust_check.summary_json(verdicts))
    else:
        console.print(_table(verdicts))
    failed = [v for v in verdicts if not v.verified]
    if failed and not as_json:
        raise FactoryError(f"not verified: {failed[0].name}: {failed[0].detail}")
    return 1 if failed else 0


def _connector_reference(settings: Settings, name: str, registry: str | None, platforms):
    catalog = catalog_mod.discover(settings)
    [key] = catalog.resolve([name])
    spec = catalog[key]
    host = settings.registry if registry is None else registry.strip()
    repository = target_repository(settings, host, spec.image_name)
    ref = trust_check.Reference(host or "docker.io", repository, version_tag(spec, settings), "")
    # Without an input hash (no engine here) only the version is checked, and the policy check says so.
    return ref, trust_check.Expectation(platforms=platforms, input_hash=_planned_input_hash(settings, catalog, key),
                                  image=key, versions=((spec.framework.name, spec.framework.version),))


def _planned_input_hash(settings: Settings, catalog, name: str) -> str | None:
    """The input hash the local plan computes, when this machine can plan (an engine with the parents)."""
    try:
        plan, _ = plan_for(settings, catalog, [name])
    except FactoryError:  # no engine here: the deployer's machine need not have one
        return None
    return plan.items[name].input_hash


def _insecure(registry: str) -> bool:
    try:
        config = DockerEngine().registry_config()
    except Exception:  # no engine: assume its defaults
        config = DOCKER_DEFAULT_INSECURE
    return is_insecure(registry, config)


def _table(verdicts) -> Table:
    table = Table(title="Verification", title_justify="left")
    for column in ("image", *(check.value for check in trust_check.Check)):
        table.add_column(column, overflow="fold")
    for verdict in verdicts:
        cells = {result.check: result for result in verdict.checks}
        row = [escape(verdict.name)]
        for check in trust_check.Check:
            result = cells.get(check)
            row.append("-" if result is None else
                       (f"[green]ok[/] {escape(result.detail)}" if result.ok else f"[bold red]failed[/] "
                                                                                  f"{escape(result.detail)}"))
        table.add_row(*row)
    return table
