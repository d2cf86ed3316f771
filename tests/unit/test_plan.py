import pytest
from fake_engine import FakeEngine
from project_tree import add_connector, connector_lock
from testkit import OM_OTHER_VERSIONS, OM_VERSION

from ingestion_factory import settings as settings_mod
from ingestion_factory.engine.daemon import ImageSnapshot
from ingestion_factory.errors import ConfigError
from ingestion_factory.model import catalog
from ingestion_factory.model.graph import parents_first
from ingestion_factory.model.plan import (
    BLOCKED,
    CHANGED,
    FORCED,
    LABEL_INPUTS,
    LABEL_PARENT,
    LABEL_PLATFORM,
    MISSING,
    PARENT_CHANGED,
    UP_TO_DATE,
    ImageInfo,
    input_hash,
    make_plan,
    require_buildable,
)

PYTHON_ID = "sha256:" + "1" * 64


def setup(project):
    settings = settings_mod.load(settings_mod.pyproject_defaults(project), project)
    return settings, catalog.discover(settings)


def built_store(settings, found, names):
    """A store in which the given images were built from the current inputs."""
    store = FakeEngine.holding({settings.python_image: ImageInfo(PYTHON_ID, {}, 100)})
    ids = {}
    for name in parents_first(found.parents, names):
        spec = found[name]
        parent_id = PYTHON_ID if spec.parent is None else ids[spec.parent]
        image_id = f"sha256:{name:0>64}"[:71]
        ids[name] = image_id
        labels = {LABEL_INPUTS: input_hash(spec, parent_id, settings), LABEL_PARENT: parent_id}
        ref = f"{settings.repository(spec.image_name)}:{settings.tag or spec.framework.version}"
        store.hold(ref, ImageInfo(image_id, labels, 1000))
    return store


def test_plan_order_puts_parents_first(project):
    add_connector(project, "a")
    add_connector(project, "b", "x\n", 'parent = "a"\n')
    add_connector(project, "c")
    settings, found = setup(project)
    plan = make_plan(found, ["b", "c"], FakeEngine(), settings)
    assert plan.order == ["base", "a", "c", "b"]


def test_everything_missing_on_an_empty_engine(project):
    add_connector(project, "mysql")
    settings, found = setup(project)
    store = FakeEngine.holding({settings.python_image: ImageInfo(PYTHON_ID, {}, 1)})
    plan = make_plan(found, ["mysql"], store, settings)
    assert [(i.name, i.state) for i in plan] == [("base", MISSING), ("mysql", MISSING)]


def test_up_to_date_when_labels_match(project):
    add_connector(project, "mysql")
    add_connector(project, "postgres")
    settings, found = setup(project)
    store = built_store(settings, found, ["mysql", "postgres"])
    plan = make_plan(found, ["mysql", "postgres"], store, settings)
    assert {i.state for i in plan} == {UP_TO_DATE}
    assert plan.to_build == []


def test_changing_one_fragment_rebuilds_only_that_connector(project):
    add_connector(project, "mysql")
    add_connector(project, "postgres")
    settings, found = setup(project)
    store = built_store(settings, found, ["mysql", "postgres"])
    (project / "images/connectors/mysql/requirements.txt").write_text("pymysql>=1.2\n")
    settings, found = setup(project)
    plan = make_plan(found, ["mysql", "postgres"], store, settings)
    assert {i.name: i.state for i in plan} == {"base": UP_TO_DATE, "mysql": CHANGED, "postgres": UP_TO_DATE}


def test_base_change_rebuilds_everything_below_it(project):
    add_connector(project, "a")
    add_connector(project, "b", "x\n", 'parent = "a"\n')
    settings, found = setup(project)
    store = built_store(settings, found, ["b"])
    (project / "runtime/main.py").write_text("print('changed')\n")
    settings, found = setup(project)
    plan = make_plan(found, ["b"], store, settings)
    assert {i.name: i.state for i in plan} == {"base": CHANGED, "a": PARENT_CHANGED, "b": PARENT_CHANGED}


def test_new_python_image_marks_base_parent_changed(project):
    add_connector(project, "a")
    settings, found = setup(project)
    store = built_store(settings, found, ["a"])
    store.hold(settings.python_image, ImageInfo("sha256:" + "2" * 64, {}, 1))
    plan = make_plan(found, ["a"], store, settings)
    assert plan.items["base"].state == PARENT_CHANGED
    assert plan.items["a"].state == PARENT_CHANGED


def test_force_rebuilds_up_to_date_images(project):
    add_connector(project, "a")
    settings, found = setup(project)
    store = built_store(settings, found, ["a"])
    plan = make_plan(found, ["a"], store, settings, force=True)
    assert {i.name: i.state for i in plan} == {"base": UP_TO_DATE, "a": FORCED}


def test_missing_python_image_blocks_with_a_hint(project):
    add_connector(project, "a")
    settings, found = setup(project)
    plan = make_plan(found, ["a"], FakeEngine(), settings)
    assert {i.state for i in plan} == {BLOCKED}
    with pytest.raises(ConfigError, match="Python image") as error:
        require_buildable(plan)
    assert "inv python-image" in error.value.hint


def test_hash_covers_build_args_and_connector_settings(project):
    directory = add_connector(project, "a", "pkg\n", 'check_modules = ["x"]\n')
    settings, found = setup(project)
    first = input_hash(found["a"], PYTHON_ID, settings)
    assert first == input_hash(found["a"], PYTHON_ID, settings)
    assert first != input_hash(found["a"], "sha256:" + "3" * 64, settings)
    (directory / "connector.toml").write_text('check_modules = ["y"]\n')
    settings, found = setup(project)
    assert input_hash(found["a"], PYTHON_ID, settings) != first


LOCK = ("# Lock of ingestion-connector-a: every Python package it installs, pinned with hashes.\n"
        "# python: 3.11\n# inputs: sha256:{inputs}\n# parent-lock: sha256:{parent}\n"
        "pymysql==1.1.1 \\\n    --hash=sha256:{hash}\n")


def test_a_lock_counts_by_its_packages_not_its_header(project):
    directory = add_connector(project, "a", "pymysql\n")
    lock = connector_lock(directory)
    lock.write_text(LOCK.format(inputs="1" * 64, parent="2" * 64, hash="3" * 64))
    settings, found = setup(project)
    first = input_hash(found["a"], PYTHON_ID, settings)
    lock.write_text(LOCK.format(inputs="4" * 64, parent="5" * 64, hash="3" * 64))  # re-locked, same packages
    settings, found = setup(project)
    assert input_hash(found["a"], PYTHON_ID, settings) == first
    lock.write_text(LOCK.format(inputs="4" * 64, parent="5" * 64, hash="6" * 64))  # a hash moved
    settings, found = setup(project)
    assert input_hash(found["a"], PYTHON_ID, settings) != first


def test_adding_a_connector_with_a_new_extra_builds_only_that_connector(project):
    """The base's lock follows its catalog's extras, but the base image counts by what its lock pins:
    a new extra that moves no package leaves the base and every sibling up to date."""
    add_connector(project, "mysql", "openmetadata-ingestion[mysql]\n")
    settings, found = setup(project)
    store = built_store(settings, found, ["mysql"])
    add_connector(project, "kafka", "openmetadata-ingestion[kafka]\n")
    settings, found = setup(project)
    assert found["base"].extras == ("kafka", "mysql")
    plan = make_plan(found, ["mysql", "kafka"], store, settings)
    assert {i.name: i.state for i in plan} == {"base": UP_TO_DATE, "mysql": UP_TO_DATE, "kafka": MISSING}


def test_framework_version_is_an_input_of_the_base(project):
    settings, found = setup(project)
    first = input_hash(found["base"], PYTHON_ID, settings)
    other = settings_mod.with_framework_version(settings, "openmetadata", OM_OTHER_VERSIONS[0])
    assert input_hash(catalog.discover(other)["base"], PYTHON_ID, other) != first


def test_tags_follow_settings(project):
    add_connector(project, "a")
    settings, found = setup(project)
    settings = settings.with_overrides(tag="2.0.0rc1", registry="127.0.0.1:5000")
    plan = make_plan(found, ["a"], FakeEngine(), settings, revision="abc")
    item = plan.items["a"]
    assert item.ref == "127.0.0.1:5000/openmetadata/ingestion-connector-a:2.0.0rc1"
    assert item.tags == ["2.0.0rc1", "abc"]


def test_up_to_date_image_keeps_the_commit_it_was_built_from(project):
    add_connector(project, "a")
    settings, found = setup(project)
    store = built_store(settings, found, ["a"])
    for image in store.by_id.values():
        image.labels["org.opencontainers.image.revision"] = "0123456789ab"
    plan = make_plan(found, ["a"], store, settings, revision="fedcba987654")
    assert plan.items["a"].tags == [OM_VERSION, "0123456789ab", "latest"]


def test_a_snapshot_answers_from_one_listing_and_inspects_only_what_it_lacks():
    labels = {"k": "v", LABEL_PLATFORM: "linux/arm64"}
    api = FakeEngine()
    api.add("sha256:a", labels, ["ns/img:1", "ns/img:latest"], architecture="arm64")
    api.add("sha256:b", {"k": "v"}, ["ns/old:1"])
    api.add("sha256:c", {"k": "v"})  # untagged
    snapshot = ImageSnapshot(api)
    assert snapshot.inspect("ns/img:latest") == ImageInfo("sha256:a", labels, 7, ("ns/img:1", "ns/img:latest"),
                                                          architecture="arm64")
    # Built before the platform label: its architecture is unknown, not worth an inspect per image.
    assert snapshot.inspect("ns/old:1") == ImageInfo("sha256:b", {"k": "v"}, 7, ("ns/old:1",))
    assert snapshot.inspect("ns/other:1") is None
    assert api.inspected == ["ns/other:1"]
    assert "<none>:<none>" not in snapshot.by_ref


def test_an_image_of_another_architecture_under_the_ref_is_rebuilt_in_a_real_run(project):
    """make_plan through ImageSnapshot (the fake engine underneath): an arm64 image under
    the amd64 ref, with labels that match the inputs, is rebuilt; the plan costs one listing."""
    add_connector(project, "a")
    settings, found = setup(project)
    built = built_store(settings, found, ["a"])
    api = FakeEngine()
    for ref in built.refs:
        info = built.inspect(ref)
        architecture = "arm64" if ref.endswith(f"ingestion-connector-a:{OM_VERSION}") else "amd64"
        labels = dict(info.labels, **({LABEL_PLATFORM: f"linux/{architecture}"} if info.labels else {}))
        api.add(info.id, labels, [ref], architecture=architecture)
    plan = make_plan(found, ["a"], ImageSnapshot(api), settings)
    assert plan.items["base"].state is UP_TO_DATE
    assert plan.items["a"].state is CHANGED
    assert plan.items["a"].reason.endswith("is a arm64 image, not amd64")
    assert api.inspected == []
