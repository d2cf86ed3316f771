"""inv catalog without an engine: deriving directories from an inventory, and the three-way merge."""

import json

import pytest
from fake_engine import FakeEngine, failing_run

from ingestion_factory import settings as settings_mod
from ingestion_factory.engine.docker_engine import ImageMissing
from ingestion_factory.errors import ConfigError
from ingestion_factory.model import catalog
from ingestion_factory.workflows import catalog_sync
from ingestion_factory.workflows.catalog_sync import Change, Inventory


def load_settings(project):
    return settings_mod.load(settings_mod.pyproject_defaults(project), project)


def inventory(**overrides):
    data = {
        "package": "openmetadata-ingestion",
        "version": "1.12.14.2",
        "python": "3.11",
        "extras": {
            "mysql": ["pymysql ~=1.0"],
            "mongo": ["pymongo ~=4.3"],
            "postgres": ["psycopg2-binary", "pymysql ~=1.0"],
            "all": ["pymysql ~=1.0", "pymongo ~=4.3", "psycopg2-binary"],
            "datalake-s3": ["s3fs"],
            "datalake-gcs": ["gcsfs"],
            "datalake-azure": ["adlfs"],
            "pandas": ["pandas ~=2.0"],
        },
        "installed": ["requests", "sqlalchemy"],
        "sources": [
            {"kind": "database", "name": "mysql", "plugin_module": "metadata.ingestion.source.database.mysql.metadata"},
            {"kind": "database", "name": "mongodb", "driver_modules": ["pymongo", "pymongo.errors"],
             "plugin_module": "metadata.ingestion.source.database.mongodb.metadata"},
            {"kind": "database", "name": "mariadb", "uses_sources": ["database/mysql", "database/common_db_source"],
             "plugin_module": "metadata.ingestion.source.database.mariadb.metadata"},
            {"kind": "dashboard", "name": "metabase",
             "plugin_module": "metadata.ingestion.source.dashboard.metabase.metadata"},
            {"kind": "storage", "name": "s3", "plugin_module": "metadata.ingestion.source.storage.s3.metadata"},
            {"kind": "database", "name": "burstiq", "plugin_module": "metadata.ingestion.source.database.burstiq.metadata"},
        ],
    }
    data.update(overrides)
    return Inventory.from_json("openmetadata", data)


def derived_by_name(project):
    settings = load_settings(project)
    framework = settings.framework_named("openmetadata")
    return {d.directory: d for d in catalog_sync.derive(inventory(), framework)}


def test_extras_come_from_names_imports_sources_and_overrides(project):
    derived = derived_by_name(project)
    assert derived["mysql"].extras == ("mysql",)  # its own name
    assert derived["mongodb"].extras == ("mongo",)  # pymongo is what the `mongo` extra brings
    assert derived["mariadb"].extras == ("mysql",)  # built on the mysql source
    assert derived["metabase"].extras == ()  # REST only: the base has everything
    assert derived["s3"].extras == ("datalake-s3",)  # pyproject's catalog_extras
    assert derived["burstiq"].extras == ("pandas",)


def test_fragment_and_checks_name_the_connector_itself(project):
    derived = derived_by_name(project)
    assert derived["mongodb"].fragment.splitlines()[-1] == "openmetadata-ingestion[mongo]"
    assert derived["metabase"].fragment.splitlines()[-1] == "openmetadata-ingestion"
    assert derived["mongodb"].settings["check_modules"] == [
        "metadata.ingestion.source.database.mongodb.metadata", "pymongo"]
    assert derived["mongodb"].settings["source"] == "mongodb"
    assert derived["mongodb"].settings["framework"] == "openmetadata"


def sync(project, data=None, **kwargs):
    settings = load_settings(project)
    framework = settings.framework_named("openmetadata")
    found = data or inventory()
    return {e.directory: e for e in catalog_sync.sync(settings, framework, found,
                                                      catalog_sync.derive(found, framework), **kwargs)}


def test_sync_writes_directories_the_catalog_can_build(project):
    entries = sync(project)
    assert {e.change for e in entries.values()} == {Change.ADDED}
    found = catalog.discover(load_settings(project))
    spec = found["mongodb"]
    assert spec.requirements == ("openmetadata-ingestion[mongo]",)
    assert spec.check_modules == ("metadata.ingestion.source.database.mongodb.metadata", "pymongo")
    assert spec.source == "mongodb"
    assert found.base_for("openmetadata").extras == ("datalake-s3", "mongo", "mysql", "pandas")


def test_second_sync_is_a_no_op(project):
    sync(project)
    before = {p: p.read_text() for p in (project / "images" / "connectors").rglob("*") if p.is_file()}
    entries = sync(project)
    assert {e.change for e in entries.values()} == {Change.UNCHANGED}
    after = {p: p.read_text() for p in (project / "images" / "connectors").rglob("*") if p.is_file()}
    assert after == before


def test_hand_edits_are_kept_and_untouched_keys_follow_the_framework(project):
    sync(project)
    directory = project / "images" / "connectors" / "mongodb"
    toml = directory / "connector.toml"
    text = toml.read_text().replace("description = \"openmetadata-ingestion database source 'mongodb'\"",
                                    'description = "Mine"')
    toml.write_text(text + '# needs the C driver\nos_packages = ["libssl3"]\n')
    (directory / "requirements.txt").write_text("openmetadata-ingestion[mongo]\npymongo<4.9\n")
    changed = inventory(sources=[{"kind": "database", "name": "mongodb", "driver_modules": ["pymongo", "bson"],
                                  "plugin_module": "metadata.ingestion.source.database.mongodb.metadata"}])
    entry = sync(project, changed)["mongodb"]
    assert entry.change is Change.UPDATED
    text = toml.read_text()
    assert "# needs the C driver" in text and 'os_packages = ["libssl3"]' in text and 'description = "Mine"' in text
    spec = catalog.discover(load_settings(project))["mongodb"]
    assert spec.check_modules[-2:] == ("bson", "pymongo")  # a key nobody edited follows the framework
    assert spec.requirements == ("openmetadata-ingestion[mongo]", "pymongo<4.9")  # the person's pin stays


def test_a_hand_made_directory_is_adopted_without_losing_anything(project):
    directory = project / "images" / "connectors" / "mysql"
    directory.mkdir()
    (directory / "requirements.txt").write_text("openmetadata-ingestion[mysql]\n")
    (directory / "connector.toml").write_text('check_modules = ["pymysql"]\n')
    entry = sync(project)["mysql"]
    assert entry.change is Change.UPDATED and "check_modules" in entry.detail
    spec = catalog.discover(load_settings(project))["mysql"]
    assert spec.check_modules == ("pymysql",)
    assert spec.source == "mysql" and spec.description


def test_vanished_sources_are_reported_and_pruned_only_when_untouched(project):
    sync(project)
    edited = project / "images" / "connectors" / "metabase" / "connector.toml"
    edited.write_text(edited.read_text() + 'notes = "ours"\n')
    smaller = inventory(version="1.13.0", sources=[])
    entries = sync(project, smaller)
    assert entries["mongodb"].change is Change.GONE and "1.13.0" in entries["mongodb"].detail
    assert (project / "images" / "connectors" / "mongodb").is_dir()
    entries = sync(project, smaller, prune=True)
    assert entries["mongodb"].change is Change.REMOVED
    assert not (project / "images" / "connectors" / "mongodb").exists()
    assert entries["metabase"].change is Change.GONE  # a person edited it: kept
    assert (project / "images" / "connectors" / "metabase").is_dir()


def test_check_mode_writes_nothing(project):
    entries = sync(project, dry_run=True)
    assert all(e.change is Change.ADDED for e in entries.values())
    assert list((project / "images" / "connectors").iterdir()) == [project / "images" / "connectors" / "Dockerfile"]


def test_state_records_the_framework_version(project):
    sync(project)
    state = json.loads((project / "images" / "connectors" / ".catalog" / "openmetadata.json").read_text())
    assert state["version"] == "1.12.14.2" and "mongodb" in state["connectors"]


def test_an_override_naming_a_missing_extra_is_refused(project):
    settings = load_settings(project)
    framework = settings.framework_named("openmetadata")
    with pytest.raises(ConfigError, match="datalake-s3"):
        catalog_sync.derive(inventory(extras={"mysql": ["pymysql"]}), framework)


def test_unavailable_connectors_are_listed_but_not_built_by_default(project):
    sync(project)
    toml = project / "images" / "connectors" / "mongodb" / "connector.toml"
    toml.write_text(toml.read_text() + 'unavailable = "needs a licensed driver"\n')
    found = catalog.discover(load_settings(project))
    assert "mongodb" not in found.resolve(None)
    with pytest.raises(ConfigError, match="needs a licensed driver"):
        found.resolve(["mongodb"])
    assert "mongo" not in found.base_for("openmetadata").extras


def test_a_key_a_person_removed_stays_removed(project):
    sync(project)
    toml = project / "images" / "connectors" / "mongodb" / "connector.toml"
    toml.write_text("\n".join(line for line in toml.read_text().splitlines() if not line.startswith("description")))
    entry = sync(project)["mongodb"]
    assert entry.change is Change.KEPT and "description" in entry.detail
    assert "description" not in toml.read_text()


def probe_engine(ref: str, outcome) -> FakeEngine:
    """An engine holding the base `ref`, where the probe's command prints `outcome` (or raises it)."""
    engine = FakeEngine()
    engine.add("sha256:" + "b" * 64, {}, [ref])
    engine.run_outputs[ref] = outcome
    return engine


def test_probe_without_the_base_image_says_what_to_build_and_pulls_nothing(project):
    framework = load_settings(project).framework_named("datahub")
    engine = FakeEngine()  # running the missing image would pull it (from Docker Hub, for a local name)
    with pytest.raises(ConfigError, match="is not in the engine") as raised:
        catalog_sync.probe(framework, "x/ingestion-connector-base-datahub:1", engine)
    assert "inv build-base --framework datahub" in raised.value.hint
    assert engine.log == []  # nothing was run, so nothing was pulled


def test_probe_of_a_base_removed_after_the_look_up_says_what_to_build(project):
    framework = load_settings(project).framework_named("datahub")
    ref = "x/ingestion-connector-base-datahub:1"
    with pytest.raises(ConfigError, match="is not in the engine"):
        catalog_sync.probe(framework, ref, probe_engine(ref, ImageMissing(f"no such image: {ref}")))


def test_probe_reads_the_inventory_json(project):
    framework = load_settings(project).framework_named("openmetadata")
    data = {"package": "openmetadata-ingestion", "version": "1.12.14.2", "python": "3.11", "extras": {},
            "installed": [], "sources": []}
    found = catalog_sync.probe(framework, "img", probe_engine("img", json.dumps(data).encode()))
    assert found.version == "1.12.14.2" and found.sources == ()
    with pytest.raises(catalog_sync.FactoryError, match="not what inv catalog expects"):
        catalog_sync.probe(framework, "img", probe_engine("img", b"{truncated"))
    with pytest.raises(catalog_sync.FactoryError, match="reading openmetadata-ingestion inside img failed") as failed:
        catalog_sync.probe(framework, "img", probe_engine("img", failing_run(b"Traceback\nImportError: metadata\n")))
    assert failed.value.hint == "Traceback\nImportError: metadata"


def test_a_state_file_naming_a_path_outside_the_catalog_removes_nothing(project):
    sync(project)
    victim = project / "victim"
    (victim / "sub").mkdir(parents=True)
    state_file = project / "images" / "connectors" / ".catalog" / "openmetadata.json"
    state = json.loads(state_file.read_text())
    state["connectors"]["../../victim"] = state["connectors"]["mongodb"]
    state_file.write_text(json.dumps(state))
    with pytest.raises(ConfigError, match=r"names the connector directory '../../victim'.*nothing was changed"):
        sync(project, inventory(sources=[]), prune=True)
    assert victim.is_dir() and (project / "images" / "connectors" / "mongodb").is_dir()


def test_a_probed_source_name_that_is_no_directory_name_is_refused_before_writing(project):
    evil = {"kind": "database", "name": "../../escape", "plugin_module": "metadata.x"}
    with pytest.raises(ConfigError, match="the framework's inventory names the connector directory"):
        sync(project, inventory(sources=[evil]))
    assert not (project / "escape").exists()
    assert list((project / "images" / "connectors").iterdir()) == [project / "images" / "connectors" / "Dockerfile"]
