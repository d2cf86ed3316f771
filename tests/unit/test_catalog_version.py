"""`inv catalog --version V`: a framework version added (or refreshed) in one command, on a scratch project
with a fake engine (the probe's inventory), a fake uv, and the base's build stood in for."""

from __future__ import annotations

import json
import sys

import pytest
from fake_engine import FakeEngine
from rich.console import Console
from test_commands import exit_code, load
from test_lock import INDEX, FakeUv
from testkit import OM_OTHER_VERSIONS, OM_VERSION

from ingestion_factory import settings as settings_mod
from ingestion_factory.cli import commands
from ingestion_factory.errors import ConfigError
from ingestion_factory.model import catalog as catalog_mod
from ingestion_factory.model import plan as plan_mod
from ingestion_factory.model import versions as versions_mod

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

NEWEST = "9.0.0"  # newer than every supported version: it becomes the default
OLDER = "0.9.0"  # older than every supported one


@pytest.fixture
def quiet(monkeypatch):
    monkeypatch.setattr(commands, "console", Console(quiet=True))


@pytest.fixture
def builds(monkeypatch):
    """The base builds stand in: each call is recorded (settings' OpenMetadata version, frameworks)."""
    calls = []

    def build(settings, names=None, **options):
        calls.append((settings.framework_named("openmetadata").version, options.get("frameworks")))
        return 0

    monkeypatch.setattr(commands, "build", build)
    return calls


def inventory(settings, version: str, sources: list[str]) -> dict:
    # The extras catalog_extras names exist (the derivation refuses a framework without them).
    extras = {extra: [] for names in settings.framework_named("openmetadata").catalog_extras.values() for extra in names}
    return {"package": "openmetadata-ingestion", "version": version, "python": "3.11", "extras": extras,
            "installed": [],
            "sources": [{"kind": "database", "name": name,
                         "plugin_module": f"metadata.ingestion.source.database.{name}.metadata"} for name in sources]}


def engine_for(settings, version: str, sources: list[str]):
    view = settings_mod.with_framework_version(settings, "openmetadata", version, new=True)
    ref = plan_mod.image_ref(catalog_mod.discover(view).base_for("openmetadata"), view)
    engine = FakeEngine()
    engine.add("sha256:" + "b" * 64, {}, [ref])
    engine.run_outputs[ref] = json.dumps(inventory(settings, version, sources)).encode()
    return engine


def uv_with(*versions: str, fail: set[str] = frozenset()) -> FakeUv:
    return FakeUv({**INDEX, "openmetadata-ingestion": [*versions, OM_VERSION]}, fail=fail)


def pyproject_versions(project) -> list[str]:
    table = tomllib.loads((project / "pyproject.toml").read_text())["tool"]["ingestion-factory"]["frameworks"]
    return table["openmetadata"]["versions"]


def test_a_new_newest_version_is_added_in_one_command_and_becomes_the_default(project, quiet, builds):
    settings, _ = load(project)
    code = exit_code(commands.catalog, settings, version=NEWEST, engine=engine_for(settings, NEWEST, ["mysql", "oracle"]),
                     resolver=uv_with(NEWEST))
    assert code == 0
    assert builds == [(NEWEST, ["openmetadata"])]  # its base was built (and smoke-tested) before it was read
    assert pyproject_versions(project)[0] == NEWEST  # newest first: the default from now on
    version_dir = project / "images/base/frameworks/openmetadata" / NEWEST
    # Started from the default version's files, saying so; its base and connectors locked for it.
    started = (version_dir / "overrides.txt").read_text()
    assert started.startswith(f"# Started from {OM_VERSION}'s overrides.txt")
    assert "dbt-core-experimental-parser" in started
    assert f"openmetadata-ingestion=={NEWEST}" in (version_dir / "requirements.lock").read_text()
    assert versions_mod.read_catalog(project / "images", settings.framework_named("openmetadata").at(NEWEST)
                                     ).sources == {"mysql", "oracle"}
    for name in ("mysql", "oracle"):  # the directories follow the new default
        assert (project / f"images/connectors/{name}/locks/{NEWEST}.lock").is_file()
    reloaded, _ = load(project)
    assert reloaded.framework_named("openmetadata").version == NEWEST


def test_an_older_version_is_added_without_moving_the_directories_or_the_default(project, quiet, builds):
    settings, _ = load(project)
    assert exit_code(commands.catalog, settings, version=NEWEST, engine=engine_for(settings, NEWEST, ["mysql"]),
                     resolver=uv_with(NEWEST)) == 0
    settings, _ = load(project)
    # The older version ships oracle too, and not mysql: oracle has no directory, mysql is unavailable there.
    assert exit_code(commands.catalog, settings, version=OLDER, engine=engine_for(settings, OLDER, ["oracle"]),
                     resolver=uv_with(OLDER, NEWEST)) == 0
    assert not (project / "images/connectors/oracle").exists()
    settings, _ = load(project)
    assert settings.framework_named("openmetadata").version == NEWEST
    assert pyproject_versions(project)[-1] == OLDER
    older = catalog_mod.discover(settings_mod.with_framework_version(settings, "openmetadata", OLDER))
    assert older["mysql"].unavailable == f"not in openmetadata-ingestion {OLDER}: it has no source 'mysql'"
    assert not (project / f"images/connectors/mysql/locks/{OLDER}.lock").exists()


def test_a_version_whose_base_cannot_lock_leaves_nothing_behind(project, quiet, builds):
    settings, _ = load(project)
    before = (project / "pyproject.toml").read_text()
    code = exit_code(commands.catalog, settings, version=NEWEST, engine=engine_for(settings, NEWEST, ["mysql"]),
                     resolver=uv_with(NEWEST, fail={"cachetools"}))
    assert code == 1
    assert not (project / "images/base/frameworks/openmetadata" / NEWEST).exists()
    assert (project / "pyproject.toml").read_text() == before
    assert builds == []


def test_a_connector_whose_lock_fails_is_recorded_as_unavailable_for_that_version_only(project, quiet, builds):
    settings, _ = load(project)
    engine = engine_for(settings, NEWEST, ["mysql", "oracle"])
    assert exit_code(commands.catalog, settings, version=NEWEST, engine=engine, resolver=uv_with(NEWEST)) == 0
    (project / "images/connectors/oracle/requirements.txt").write_text("openmetadata-ingestion[oracle]\ncx-oracle\n")
    settings, _ = load(project)
    assert exit_code(commands.catalog, settings, version=NEWEST, engine=engine,
                     resolver=uv_with(NEWEST, fail={"cx-oracle"})) == 0
    framework = settings.framework_named("openmetadata")
    recorded = versions_mod.read_catalog(project / "images", framework).unavailable
    assert recorded["oracle"].startswith("lock failed: ")
    assert "cx-oracle" in recorded["oracle"]
    assert catalog_mod.discover(settings)["oracle"].unavailable.startswith(f"not in openmetadata-ingestion {NEWEST}")
    # Fixed: the next run locks it and takes the entry back.
    settings, _ = load(project)
    assert exit_code(commands.catalog, settings, version=NEWEST, engine=engine, resolver=uv_with(NEWEST)) == 0
    assert "oracle" not in versions_mod.read_catalog(project / "images", framework).unavailable


def test_another_spelling_of_a_supported_version_is_that_version(project, quiet, builds):
    settings, _ = load(project)
    other = OM_OTHER_VERSIONS[0]
    spelled = other.removesuffix(".0") if other.endswith(".0") else other + ".0"
    before = (project / "pyproject.toml").read_text()
    view = settings_mod.with_framework_version(settings, "openmetadata", spelled)
    assert view.framework_named("openmetadata").version == other
    commands.catalog(settings, version=spelled, engine=engine_for(settings, other, ["mysql"]),
                     resolver=uv_with(other))
    assert (project / "pyproject.toml").read_text() == before  # nothing added: it is supported
    assert builds == [(other, ["openmetadata"])]


def test_check_goes_without_version_and_a_version_must_be_able_to_be_a_tag(project, quiet, builds):
    settings, _ = load(project)
    with pytest.raises(ConfigError):
        commands.catalog(settings, ["openmetadata"], version=NEWEST, check=True)
    with pytest.raises(ConfigError) as bad:
        commands.catalog(settings, ["openmetadata"], version="2.0+local", engine=engine_for(settings, OM_VERSION, []))
    assert "image tag" in bad.value.message
    assert builds == []


# --- --version all and --version V across the tasks ------------------------------------------------------


def test_version_all_refuses_one_tag_for_several_versions_and_fail_fast_stops_at_the_first_failure(
        project, quiet, monkeypatch):
    from ingestion_factory.errors import FactoryError

    settings, _ = load(project)
    views = settings_mod.selected_views(settings, settings_mod.ALL_VERSIONS)
    assert len(views) == 1 + len(OM_OTHER_VERSIONS)
    tagged = [(view.with_overrides(tag="rc1"), varied) for view, varied in views]
    with pytest.raises(ConfigError) as refused:
        commands.build_versions(tagged)
    assert "rc1" in refused.value.message

    built = []

    def build(settings, names=None, **options):
        built.append(settings.framework_named("openmetadata").version)
        raise FactoryError("1 image(s) not built: mysql")

    monkeypatch.setattr(commands, "build", build)
    with pytest.raises(FactoryError):
        commands.build_versions(views, fail_fast=True)
    assert built == [OM_VERSION]
    built.clear()
    with pytest.raises(FactoryError) as every:
        commands.build_versions(views)
    assert built == [OM_VERSION, *OM_OTHER_VERSIONS]  # without --fail-fast every version is tried
    assert every.value.message.startswith(f"{len(views)} of {len(views)} framework version(s) failed")


def test_a_version_selects_its_own_framework_even_when_it_is_that_frameworks_default(project):
    settings, _ = load(project)
    datahub = settings.framework_named("datahub").version
    [(view, varied)] = settings_mod.selected_views(settings, datahub)
    assert varied == "datahub"  # not every framework: `inv push --version <DataHub's>` pushes DataHub's images
    [(view, varied)] = settings_mod.selected_views(settings, OM_VERSION)
    assert varied == "openmetadata"
    assert [v for _, v in settings_mod.selected_views(settings, settings_mod.ALL_VERSIONS, "openmetadata")] == \
        ["openmetadata"] * (1 + len(OM_OTHER_VERSIONS))
