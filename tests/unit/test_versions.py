"""Several versions of one framework side by side: the settings that list them, the version a run selects, the
tags of a non-default version, and per version its own locks, catalog (catalog.toml) and uv overrides."""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
from dataclasses import replace

import pytest
from fake_engine import FakeEngine
from project_tree import add_connector, connector_lock
from test_lock import FakeUv
from test_plan import PYTHON_ID

from ingestion_factory import settings as settings_mod
from ingestion_factory.errors import ConfigError
from ingestion_factory.model import catalog
from ingestion_factory.model.plan import input_hash, make_plan
from ingestion_factory.settings import image_tags
from ingestion_factory.workflows import lock as lock_mod

# The tiny tree's two OpenMetadata versions (its own, not the repository's: see the `tree` fixture).
NEW, OLD = "2.0.0", "1.10.0"
FRAMEWORK = "openmetadata"


def frameworks_table(project, **table):
    """The settings mapping of the `project` fixture with the OpenMetadata table's version keys replaced."""
    data = copy.deepcopy(settings_mod.pyproject_defaults(project))
    om = data["frameworks"][FRAMEWORK]
    om.pop("version", None)
    om.pop("versions", None)
    om.update(table)
    return data


def load(project, **table):
    return settings_mod.load(frameworks_table(project, **table), project)


# --- (a) settings: the supported versions and the default --------------------------------------------------


def test_versions_are_sorted_newest_first_and_the_newest_is_the_default(project):
    framework = load(project, versions=["1.9.0", "1.10.0", "1.2.3.4"]).frameworks[FRAMEWORK]
    assert framework.supported == ("1.10.0", "1.9.0", "1.2.3.4")  # by version, not as strings
    assert framework.default_version == framework.version == "1.10.0"
    assert framework.is_default_version
    assert framework.requirement == "openmetadata-ingestion==1.10.0"
    older = framework.at("1.9.0")
    assert older.version == "1.9.0" and older.default_version == "1.10.0" and not older.is_default_version


def test_an_explicit_version_is_the_default_when_it_is_one_of_the_versions(project):
    framework = load(project, versions=["2.0.0", "1.0.0"], version="1.0.0").frameworks[FRAMEWORK]
    assert framework.supported == ("2.0.0", "1.0.0")
    assert framework.default_version == framework.version == "1.0.0" and framework.is_default_version
    assert not framework.at("2.0.0").is_default_version  # newer, but not the default


def test_an_explicit_version_outside_the_versions_is_refused(project):
    with pytest.raises(ConfigError, match=r"version '3\.0\.0' \(the default\) is not one of versions") as refused:
        load(project, versions=["2.0.0", "1.0.0"], version="3.0.0")
    assert "add it to versions" in refused.value.hint


def test_the_single_version_setting_still_works(project):
    framework = load(project, version="1.12.14.2").frameworks[FRAMEWORK]
    assert framework.supported == ("1.12.14.2",)
    assert framework.default_version == framework.version == "1.12.14.2" and framework.is_default_version


def test_versions_from_an_environment_variable_are_comma_separated(project):
    assert load(project, versions=" 1.0.0, 2.0.0 ").frameworks[FRAMEWORK].supported == ("2.0.0", "1.0.0")


@pytest.mark.parametrize("versions, message", [
    (["2.0.0", "1.0.0", "2.0.0"], "lists a version twice"),
    (["2.0.0", "latest"], r"'latest' is not a version \(PEP 440\)"),
    (["2.0.0", "1.0 beta"], r"'1\.0 beta' is not a version \(PEP 440\)"),
])
def test_a_duplicate_or_a_non_pep440_version_is_refused(project, versions, message):
    with pytest.raises(ConfigError, match=message):
        load(project, versions=versions)


def test_a_framework_without_any_version_is_refused(project):
    with pytest.raises(ConfigError, match="framework 'openmetadata' lacks versions"):
        load(project)


# --- (b) selecting a version -------------------------------------------------------------------------------


def test_an_unsupported_version_is_refused_with_the_command_that_adds_it(project):
    settings = load(project, versions=[NEW, OLD])
    with pytest.raises(ConfigError) as refused:
        settings_mod.with_framework_version(settings, FRAMEWORK, "9.9.9")
    assert "9.9.9 is not a supported version of openmetadata" in refused.value.message
    assert f"supported: {NEW}, {OLD}" in refused.value.message
    assert "inv catalog --framework openmetadata --version 9.9.9" in refused.value.hint


def test_a_supported_version_is_selected_and_any_version_with_new(project):
    settings = load(project, versions=[NEW, OLD])
    old = settings_mod.with_framework_version(settings, FRAMEWORK, OLD)
    assert old.frameworks[FRAMEWORK].version == OLD and not old.frameworks[FRAMEWORK].is_default_version
    assert old.frameworks["datahub"] == settings.frameworks["datahub"]  # only the framework named moves
    added = settings_mod.with_framework_version(settings, FRAMEWORK, "9.9.9", new=True)  # inv catalog --version
    assert added.frameworks[FRAMEWORK].requirement == "openmetadata-ingestion==9.9.9"
    assert added.frameworks[FRAMEWORK].supported == (NEW, OLD)  # selecting it does not make it supported
    with pytest.raises(ConfigError, match="not a version"):
        settings_mod.with_framework_version(settings, FRAMEWORK, "not-a-version", new=True)


# --- (c) tags ----------------------------------------------------------------------------------------------


def test_a_non_default_version_gets_only_its_version_tag():
    assert image_tags("1.12.14.2", "abc123") == ["1.12.14.2", "abc123", "latest"]
    assert image_tags("1.12.14.2", "abc123", default_version=True) == ["1.12.14.2", "abc123", "latest"]
    assert image_tags("1.12.14.2", "abc123", default_version=False) == ["1.12.14.2"]
    assert image_tags("2.0.0rc1", None, default_version=False) == ["2.0.0rc1"]


# --- (d) a tiny tree with two versions: locks, inputs, availability ----------------------------------------


BASE_LOCK = "# inputs: sha256:00\nopenmetadata-ingestion=={version} \\\n    --hash=sha256:{hash}\n"
CONNECTOR_LOCK = "# inputs: sha256:{inputs}\npymysql==1.1.1 \\\n    --hash=sha256:{hash}\n"


@pytest.fixture
def tree(project):
    """The `project` fixture with two OpenMetadata versions of its own, NEW (the default) and OLD, each with a
    base lock, and a connector `mysql` with a lock for each."""
    framework_dir = project / "images" / "base" / "frameworks" / FRAMEWORK
    for path in framework_dir.iterdir():  # the repository's versions: not this tree's
        if path.is_dir():
            shutil.rmtree(path)
    for version, digest in ((NEW, "1" * 64), (OLD, "2" * 64)):
        (framework_dir / version).mkdir()
        (framework_dir / version / "requirements.lock").write_text(BASE_LOCK.format(version=version, hash=digest))
    mysql = add_connector(project, "mysql")
    connector_lock(mysql, NEW).write_text(CONNECTOR_LOCK.format(inputs="3" * 64, hash="4" * 64))
    connector_lock(mysql, OLD).write_text(CONNECTOR_LOCK.format(inputs="5" * 64, hash="6" * 64))
    return project


def views(project):
    """(settings, catalog) of the default version NEW, then of OLD."""
    settings = load(project, versions=[OLD, NEW])
    old = settings_mod.with_framework_version(settings, FRAMEWORK, OLD)
    return (settings, catalog.discover(settings)), (old, catalog.discover(old))


def version_dir(project, version):
    return project / "images" / "base" / "frameworks" / FRAMEWORK / version


def test_a_connector_installs_the_lock_of_the_selected_version(tree):
    (new, new_found), (old, old_found) = views(tree)
    mysql = tree / "images" / "connectors" / "mysql"
    assert new_found["mysql"].lock == mysql / "locks" / f"{NEW}.lock"
    assert old_found["mysql"].lock == mysql / "locks" / f"{OLD}.lock"
    assert lock_mod.lock_path(new_found, "mysql", new) == new_found["mysql"].lock
    assert lock_mod.lock_path(old_found, "mysql", old) == old_found["mysql"].lock
    assert new_found["base"].lock == version_dir(tree, NEW) / "requirements.lock"
    assert old_found["base"].lock == version_dir(tree, OLD) / "requirements.lock"
    # What the builds and the locks are for: that version of the framework.
    assert new_found["mysql"].version == NEW and old_found["mysql"].version == OLD
    assert new_found["base"].framework.requirement == f"openmetadata-ingestion=={NEW}"
    assert old_found["base"].framework.requirement == f"openmetadata-ingestion=={OLD}"


def test_only_the_selected_versions_lock_is_an_input(tree):
    (settings, found), _ = views(tree)
    mysql = tree / "images" / "connectors" / "mysql"
    assert mysql / "locks" / f"{NEW}.lock" in found["mysql"].input_files
    assert mysql / "locks" / f"{OLD}.lock" not in found["mysql"].input_files
    base_inputs = set(found["base"].input_files)
    assert version_dir(tree, NEW) / "requirements.lock" in base_inputs
    assert not [p for p in base_inputs if p.is_relative_to(version_dir(tree, OLD))]
    first = input_hash(found["mysql"], PYTHON_ID, settings)
    base_first = input_hash(found["base"], PYTHON_ID, settings)

    # Another version's locks moved (a re-lock of OLD): nothing of NEW is stale.
    connector_lock(mysql, OLD).write_text(CONNECTOR_LOCK.format(inputs="7" * 64, hash="8" * 64))
    (version_dir(tree, OLD) / "requirements.lock").write_text(BASE_LOCK.format(version=OLD, hash="9" * 64))
    (settings, found), _ = views(tree)
    assert input_hash(found["mysql"], PYTHON_ID, settings) == first
    assert input_hash(found["base"], PYTHON_ID, settings) == base_first

    # Its own lock moved: it is (so the comparison above is not vacuous).
    connector_lock(mysql, NEW).write_text(CONNECTOR_LOCK.format(inputs="3" * 64, hash="a" * 64))
    (settings, found), _ = views(tree)
    assert input_hash(found["mysql"], PYTHON_ID, settings) != first


def test_a_connector_without_a_lock_for_the_version_has_no_lock_among_its_inputs(tree):
    connector_lock(tree / "images" / "connectors" / "mysql", OLD).unlink()
    _, (_, found) = views(tree)
    assert found["mysql"].lock == tree / "images" / "connectors" / "mysql" / "locks" / f"{OLD}.lock"
    assert not [p for p in found["mysql"].input_files if p.suffix == ".lock"]


def test_the_version_catalog_is_no_input_of_the_base(tree):
    (settings, found), _ = views(tree)
    before = input_hash(found["base"], PYTHON_ID, settings)
    (version_dir(tree, NEW) / "catalog.toml").write_text('sources = ["mysql"]\n\n[unavailable]\n')
    (settings, found), _ = views(tree)
    assert input_hash(found["base"], PYTHON_ID, settings) == before


def test_unavailable_in_catalog_toml_holds_in_that_version_only(tree):
    add_connector(tree, "oracle", "cx-oracle\n")
    add_connector(tree, "oracle-plus", "pymysql\n", 'parent = "oracle"\n')
    (version_dir(tree, OLD) / "catalog.toml").write_text(
        '[unavailable]\noracle = "lock failed: cx-oracle has no wheel for this Python"\n')
    (_, new_found), (_, old_found) = views(tree)
    assert new_found["oracle"].unavailable == "" and new_found["oracle-plus"].unavailable == ""
    assert old_found["oracle"].unavailable == (
        f"not in openmetadata-ingestion {OLD}: lock failed: cx-oracle has no wheel for this Python")
    assert old_found["oracle-plus"].unavailable.startswith("built FROM oracle, which is unavailable")
    assert old_found["mysql"].unavailable == ""
    assert "oracle" not in old_found.resolve(None) and "oracle" in new_found.resolve(None)


def test_a_generated_directory_whose_source_the_version_lacks_is_unavailable_there(tree):
    add_connector(tree, "kafka", "openmetadata-ingestion[kafka]\n")  # written by `inv catalog`
    add_connector(tree, "handmade", "pymysql\n", 'source = "no-such-source"\n')  # not: judged by no source list
    state = tree / "images" / "connectors" / ".catalog" / f"{FRAMEWORK}.json"
    state.parent.mkdir(parents=True, exist_ok=True)
    state.write_text(json.dumps({"package": "openmetadata-ingestion", "version": NEW,
                                 "connectors": {"kafka": {}, "mysql": {}}}))
    (version_dir(tree, OLD) / "catalog.toml").write_text('sources = ["mysql"]\n\n[unavailable]\n')
    (version_dir(tree, NEW) / "catalog.toml").write_text('sources = ["kafka", "mysql"]\n\n[unavailable]\n')
    (_, new_found), (_, old_found) = views(tree)
    assert old_found["kafka"].unavailable == f"not in openmetadata-ingestion {OLD}: it has no source 'kafka'"
    assert new_found["kafka"].unavailable == ""
    assert old_found["mysql"].unavailable == "" and new_found["mysql"].unavailable == ""
    assert old_found["handmade"].unavailable == "" and new_found["handmade"].unavailable == ""
    # An unavailable connector has no lock to write in that version.
    _, (old, _) = views(tree)
    assert "kafka" not in lock_mod.targets(old_found, old)


def test_a_version_without_a_catalog_toml_has_every_connector(tree):
    add_connector(tree, "kafka", "openmetadata-ingestion[kafka]\n")
    (_, new_found), (_, old_found) = views(tree)
    assert not [spec.name for spec in [*new_found.connectors, *old_found.connectors] if spec.unavailable]


def test_a_bad_catalog_toml_is_refused_with_the_command_that_rewrites_it(tree):
    (version_dir(tree, OLD) / "catalog.toml").write_text('[unavailable]\noracle = ""\n')
    settings = settings_mod.with_framework_version(load(tree, versions=[NEW, OLD]), FRAMEWORK, OLD)
    with pytest.raises(ConfigError, match=r"\[unavailable\] must map connector names to reasons") as refused:
        catalog.discover(settings)
    assert f"inv catalog --framework openmetadata --version {OLD}" in refused.value.hint


def test_a_non_default_versions_images_get_only_their_version_tag(tree):
    (new, new_found), (old, old_found) = views(tree)
    assert make_plan(new_found, ["mysql"], FakeEngine(), new, revision="abc").items["mysql"].tags == [
        NEW, "abc", "latest"]
    plan = make_plan(old_found, ["mysql"], FakeEngine(), old, revision="abc")
    assert plan.items["mysql"].tags == [OLD] and plan.items["base"].tags == [OLD]
    assert plan.items["mysql"].ref.endswith(f"/ingestion-connector-mysql:{OLD}")


# --- (e) a version's uv overrides --------------------------------------------------------------------------


OVERRIDE = "dbt-core-experimental-parser; sys_platform == 'never'"


def test_the_locks_of_a_version_with_overrides_carry_them(tree):
    (version_dir(tree, OLD) / "overrides.txt").write_text(f"# dropped: its build downloads from GitHub\n{OVERRIDE}\n")
    (new, new_found), (old, old_found) = views(tree)
    old_targets = lock_mod.targets(old_found, old)
    new_targets = lock_mod.targets(new_found, new)
    assert old_targets["base"].overrides == (OVERRIDE,) and old_targets["mysql"].overrides == (OVERRIDE,)
    assert old_targets["base"].version == OLD and old_targets["mysql"].version == OLD
    assert new_targets["base"].overrides == () and new_targets["mysql"].overrides == ()
    assert old_targets[lock_mod.SBOM_TOOL].overrides == ()  # not a framework's image
    # The overrides are an input of the lock: adding one makes the version's locks stale.
    for name in ("base", "mysql"):
        target = old_targets[name]
        assert target.inputs(old, "sha256:00") != replace(target, overrides=()).inputs(old, "sha256:00")


def test_the_inputs_digest_of_a_target_without_overrides_is_what_it_was_before_overrides(tree):
    """Locks written before versions had overrides stay current: with none, the header has no overrides key."""
    (new, new_found), _ = views(tree)
    for name, target in lock_mod.targets(new_found, new).items():
        assert target.overrides == ()
        assert target.inputs(new, "sha256:00") == replace(target, overrides=()).inputs(new, "sha256:00")
        before = {"recipe": lock_mod.RECIPE_VERSION, "image": target.image, "python": new.python_version,
                  "platform": new.lock_platform, "requirements": list(target.requirements),
                  "constraints": list(target.constraints), "joint": target.joint_request, "parent-lock": "sha256:00"}
        expected = "sha256:" + hashlib.sha256(json.dumps(before, sort_keys=True).encode()).hexdigest()
        assert target.inputs(new, "sha256:00") == expected, name


def test_a_versions_constraints_follow_the_frameworks(tree):
    framework_dir = version_dir(tree, OLD).parent
    (framework_dir / "constraints.txt").write_text("# every version\nsetuptools<81\n")
    (version_dir(tree, OLD) / "constraints.txt").write_text("# this one\nnumpy<2\n")
    (new, new_found), (old, old_found) = views(tree)
    assert lock_mod.targets(old_found, old)["base"].constraints == ("setuptools<81", "numpy<2")
    assert lock_mod.targets(new_found, new)["base"].constraints == ("setuptools<81",)


def test_the_locker_passes_the_overrides_to_uv_and_names_them_in_the_header(tree):
    (version_dir(tree, OLD) / "overrides.txt").write_text(f"{OVERRIDE}\n")
    for path in (*tree.glob("images/**/requirements.lock"), *tree.glob("images/connectors/*/locks/*.lock")):
        path.unlink()
    _, (old, old_found) = views(tree)
    targets = lock_mod.targets(old_found, old)
    uv = FakeUv({"openmetadata-ingestion": [OLD], "dumb-init": ["1.2.5.post1"], "cachetools": ["5.5.2"],
                 "pymysql": ["1.1.1"], "cyclonedx-bom": ["7.5.0"]})
    results = lock_mod.Locker(old, targets, resolver=uv).run(lock_mod.select(targets, ["mysql"]), jobs=1)
    assert {r.name: r.status for r in results} == {"base": lock_mod.LockStatus.CREATED,
                                                   "mysql": lock_mod.LockStatus.CREATED}
    compiles = [c for c in uv.calls if "--generate-hashes" in c]
    assert len(compiles) == 2 and all("--overrides" in c for c in compiles)  # the base's and the connector's
    assert uv.overrides == [f"{OVERRIDE}\n"] * 2
    written = lock_mod.read(targets["mysql"].path)
    assert targets["mysql"].path == tree / "images" / "connectors" / "mysql" / "locks" / f"{OLD}.lock"
    assert written.header["overrides"] == json.dumps([OVERRIDE])
    assert written.packages["openmetadata-ingestion"] == OLD
    assert f"inv lock -c mysql --version {OLD}" in targets["mysql"].path.read_text().splitlines()[1]
    assert lock_mod.check(targets, old, ["mysql"])[-1].current


def test_a_lock_file_is_digested_once_per_content_and_the_memo_survives_the_run(tmp_path, monkeypatch):
    """A no-op over every version's catalog reads ~300 locks: each content is digested once, then remembered
    (on disk, in the output directory) by the sha256 of its bytes."""
    from ingestion_factory.engine import daemon
    from ingestion_factory.model import lockfile

    monkeypatch.setattr(lockfile, "DIGEST_MEMO", {})
    calls = []
    real = lockfile.content_digest
    monkeypatch.setattr(lockfile, "content_digest", lambda text: calls.append(text) or real(text))
    data = b"# header\npymysql==1.1.1 \\\n    --hash=sha256:" + b"a" * 64 + b"\n"
    assert lockfile.file_digest(data) == real(data.decode()) == lockfile.file_digest(data)
    assert len(calls) == 1
    assert lockfile.file_digest(data.replace(b"# header", b"# other header")) == real(data.decode())
    settings = type("S", (), {"output_path": tmp_path})()
    daemon._save_digest_memo(settings, 0)
    monkeypatch.setattr(lockfile, "DIGEST_MEMO", {})
    assert daemon._load_digest_memo(settings) == 2
    (tmp_path / "cache" / daemon.DIGEST_MEMO_FILE).write_text("not json")
    monkeypatch.setattr(lockfile, "DIGEST_MEMO", {})
    assert daemon._load_digest_memo(settings) == 0  # a bad memo is an empty one
