"""The task functions tasks.py calls, run on a scratch project against the fake engine (tests/fake_engine.py):
what they select, what they refuse before building, and the exit code they end with at the tasks' boundary."""

from __future__ import annotations

import json

import pytest
from fake_engine import FakeEngine, built_engine
from invoke import Exit
from project_tree import add_connector
from rich.console import Console
from test_lock import INDEX, FakeUv
from testkit import OM_OTHER_VERSIONS, OM_VERSION

import tasks
from ingestion_factory import settings as settings_mod
from ingestion_factory.cli import commands
from ingestion_factory.errors import ConfigError, FactoryError
from ingestion_factory.model import catalog as catalog_mod
from ingestion_factory.model import catalog_table
from ingestion_factory.model import plan as plan_mod
from ingestion_factory.model.shard import shard_of
from ingestion_factory.progress import Quiet
from ingestion_factory.workflows import bundle as bundle_mod
from ingestion_factory.workflows import bundle_archive
from ingestion_factory.workflows import lock as lock_mod

CONNECTORS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot")
QUIET = Console(quiet=True)


def load(project):
    settings = settings_mod.load(settings_mod.pyproject_defaults(project), project)
    return settings, catalog_mod.discover(settings)


def exit_code(function, *args, **kwargs) -> int:
    """What `inv` exits with when the task's function returns or raises this."""
    try:
        tasks.reports_errors(function)(*args, **kwargs)
    except Exit as exc:
        return exc.code
    return 0


def report_names(settings) -> set[str]:
    report = json.loads((settings.output_path / "reports" / "build-latest.json").read_text())
    return {image["name"] for image in report["images"]}


@pytest.fixture
def no_buildkit(monkeypatch):
    """No BuildKit CLI: a build that got past the checks under test stops with exit 3 instead of building."""
    monkeypatch.setenv("FACTORY_DOCKER_CLI", "/nonexistent/docker")


# --- build ------------------------------------------------------------------------------------------


def test_a_shard_builds_only_its_connectors_and_their_parents(project, no_buildkit):
    for name in CONNECTORS:
        add_connector(project, name)
    settings, catalog = load(project)
    first = {name for name in CONNECTORS if shard_of(name, 2) == 1}
    assert first and first != set(CONNECTORS)  # both shards hold some of them
    api = built_engine(settings, catalog, list(CONNECTORS))
    assert exit_code(commands.build, settings, shard="1/2", engine=api) == 0
    assert report_names(settings) == {"base", *first}
    assert exit_code(commands.build, settings, shard="2/2", engine=api) == 0
    assert report_names(settings) == {"base", *(set(CONNECTORS) - first)}
    assert api.tagged == []  # all up to date with every tag: nothing to do


def test_a_build_stops_at_a_stale_lock_before_anything_is_built(project, no_buildkit):
    add_connector(project, "alpha")  # no lock yet
    settings, catalog = load(project)
    api = built_engine(settings, catalog, [])  # only the Python image
    with pytest.raises(ConfigError) as refused:
        commands.build(settings, ["alpha"], engine=api)
    assert "lock(s) do not match their inputs" in refused.value.message and "alpha: missing" in refused.value.message
    assert "inv lock" in refused.value.hint and "-c alpha" in refused.value.hint
    assert exit_code(commands.build, settings, ["alpha"], engine=api) == 2
    assert api.tagged == [] and not (settings.output_path / "reports" / "build-latest.json").exists()


# --- lock --check -----------------------------------------------------------------------------------


def write_locks(project):
    """Every image's lock for every supported framework version, as `inv lock` writes them."""
    settings, _ = load(project)
    for view, varied in settings_mod.version_views(settings):
        targets = lock_mod.targets(catalog_mod.discover(view), view, only_framework=varied)
        lock_mod.Locker(view, targets, resolver=FakeUv(INDEX)).run(lock_mod.select(targets, None), jobs=2)


def test_lock_check_exits_0_when_current_and_1_on_drift_naming_the_stale_lock(project):
    add_connector(project, "mysql", "pymysql>=1.1\n")
    add_connector(project, "mysql-plus", "pymysql\n", settings='parent = "mysql"\n')
    add_connector(project, "postgres", "psycopg2-binary\n")
    write_locks(project)
    settings, _ = load(project)
    assert exit_code(commands.lock, settings, check=True) == 0

    # mysql's fragment changes: its lock is stale in every framework version; the child is judged by its
    # parent's packages once mysql is re-locked (identity by content), so only mysql is named.
    (project / "images/connectors/mysql/requirements.txt").write_text("pymysql>=1.1.1\n")
    with pytest.raises(FactoryError) as stale:
        commands.lock(settings, check=True)
    versions = (OM_VERSION, *OM_OTHER_VERSIONS)  # the default version first, as `inv lock` goes
    named = ", ".join(f"mysql ({v})" for v in versions)
    assert stale.value.message.endswith(f"lock(s) do not match their inputs: {named}")
    assert stale.value.hint == "run: inv lock -c mysql"  # stale in every version: one command covers them
    assert exit_code(commands.lock, settings, check=True) == 1
    before = (project / f"images/connectors/mysql/locks/{OM_VERSION}.lock").read_bytes()
    assert exit_code(commands.lock, settings, ["mysql"], check=True) == 1
    assert (project / f"images/connectors/mysql/locks/{OM_VERSION}.lock").read_bytes() == before  # --check writes nothing


# --- catalog --check --------------------------------------------------------------------------------


def om_inventory(settings, sources):
    framework = settings.framework_named("openmetadata")
    extras = {extra: [] for names in framework.catalog_extras.values() for extra in names}
    return {"package": framework.package, "version": OM_VERSION, "python": settings.python_version,
            "extras": extras, "installed": [],
            "sources": [{"kind": "database", "name": name,
                         "plugin_module": f"metadata.ingestion.source.database.{name}.metadata"} for name in sources]}


def om_base(settings, inventory: dict) -> FakeEngine:
    """An engine holding the OpenMetadata base the catalog's probe reads, and what the probe prints in it."""
    ref = plan_mod.image_ref(catalog_mod.discover(settings).base_for("openmetadata"), settings)
    engine = FakeEngine()
    engine.add("sha256:" + "b" * 64, {}, [ref])
    engine.run_outputs[ref] = json.dumps(inventory).encode()
    return engine


def test_catalog_check_exits_1_on_drift_and_0_once_synced(project):
    page = project / catalog_table.PAGE
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(f"# Connectors\n\n{catalog_table.START}\n{catalog_table.END}\n")
    settings, _ = load(project)
    api = om_base(settings, om_inventory(settings, ["mysql", "oracle"]))
    with pytest.raises(FactoryError) as drift:
        commands.catalog(settings, ["openmetadata"], check=True, engine=api)
    assert drift.value.message == ("3 item(s) differ from what the frameworks say: mysql, oracle, "
                                   f"the catalog table in {catalog_table.PAGE}")
    assert exit_code(commands.catalog, settings, ["openmetadata"], check=True, engine=api) == 1
    assert not (project / "images/connectors/mysql").exists()  # --check writes nothing

    assert exit_code(commands.catalog, settings, ["openmetadata"], engine=api) == 0
    assert (project / "images/connectors/mysql/requirements.txt").is_file()
    assert exit_code(commands.catalog, settings, ["openmetadata"], check=True, engine=api) == 0

    drifted = om_base(settings, om_inventory(settings, ["mysql", "oracle", "db2"]))
    assert exit_code(commands.catalog, settings, ["openmetadata"], check=True, engine=drifted) == 1


# --- bundle -----------------------------------------------------------------------------------------


def test_bundle_refuses_images_not_built_from_the_current_inputs(project, tmp_path):
    add_connector(project, "alpha")
    add_connector(project, "bravo")
    settings, catalog = load(project)
    output = tmp_path / "site.bundle"
    stale = built_engine(settings, catalog, ["alpha", "bravo"], stale=("bravo",))
    with pytest.raises(FactoryError) as refused:
        bundle_mod.bundle(settings, ["alpha", "bravo"], output, progress=Quiet(), engine=stale)
    assert refused.value.message.startswith("refusing to bundle 1 image(s)")
    assert "bravo (inputs changed)" in refused.value.message and "alpha" not in refused.value.message
    assert exit_code(bundle_mod.bundle, settings, ["alpha"], output, progress=Quiet(),
                     engine=built_engine(settings, catalog, [])) == 1  # missing
    assert not output.exists()

    current = built_engine(settings, catalog, ["alpha", "bravo"])
    assert exit_code(bundle_mod.bundle, settings, ["alpha", "bravo"], output, progress=Quiet(),
                     engine=current) == 0
    assert [image.name for image in bundle_archive.read_manifest(output).images] == ["base", "alpha", "bravo"]
