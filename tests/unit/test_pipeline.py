"""One pipeline for N platforms: the rules build, push and bundle share, and the bugs the two paths hid."""

import ast
import importlib
import pkgutil
from pathlib import Path

import pytest
from project_tree import add_connector, connector_lock
from test_builder import FakeEngine, engine  # noqa: F401  (the fixture)
from test_platforms import ARM_PYTHON_ID, FakePusher, FakeRegistry, variants

from ingestion_factory import platforms
from ingestion_factory import settings as settings_mod
from ingestion_factory.errors import ConfigError, FactoryError
from ingestion_factory.model import catalog
from ingestion_factory.model.plan import (
    BLOCKED,
    LABEL_INPUTS,
    LABEL_PARENT,
    ImageInfo,
    input_hash,
    make_plan,
    require_buildable,
    require_verified,
)
from ingestion_factory.model.results import BuildStatus
from ingestion_factory.platforms import ARM64
from ingestion_factory.status import Status
from ingestion_factory.workflows import manifest_list, push
from ingestion_factory.workflows.builder import Builder

PACKAGE = Path(__file__).resolve().parents[2] / "ingestion_factory"


def blocked_connector_plan(project, store, monkeypatch):
    """arm64, the base installed under emulation, the connector cross-installed without the build platform's
    Python image: the connector is BLOCKED while its base is not."""
    monkeypatch.setattr(platforms, "host", lambda: platforms.AMD64)
    directory = add_connector(project, "wheels")
    connector_lock(directory).write_text("# inputs: x\n# aarch64-built-from-source: none (a wheel for every "
                                                 "package)\npymysql==1.1.0 \\\n    --hash=sha256:00\n")
    settings = settings_mod.load(settings_mod.pyproject_defaults(project), project)
    store.untag(settings.python_image)
    store.hold(ARM64.ref(settings.python_image), ImageInfo(ARM_PYTHON_ID, {}, 1, architecture="arm64"))
    found = catalog.discover(settings)
    base = found["base"]
    labels = {LABEL_INPUTS: input_hash(base, ARM_PYTHON_ID, settings, ARM64, "target", None),
              LABEL_PARENT: ARM_PYTHON_ID}
    store.hold(f"openmetadata/ingestion-connector-base:{base.framework.version}-arm64",
               ImageInfo("sha256:" + "b" * 64, labels, 1, architecture="arm64"))
    plan = make_plan(found, ["wheels"], store, settings, platform=ARM64)
    assert plan.items["base"].state != BLOCKED and plan.items["wheels"].state == BLOCKED
    return settings, plan


def test_a_blocked_connector_stops_the_run_before_anything_is_built(project, engine, monkeypatch):
    _, plan = blocked_connector_plan(project, engine, monkeypatch)
    with pytest.raises(ConfigError) as refused:
        require_buildable(plan)
    assert "cross-installing needs the build platform's Python image" in refused.value.message


def test_the_builder_never_keeps_a_blocked_connector_as_up_to_date(project, engine, monkeypatch):
    settings, plan = blocked_connector_plan(project, engine, monkeypatch)
    builder = Builder(settings, engine, revision=None, run_build=engine.build, smoke_test=engine.smoke_test)
    results = {r.name: r for r in builder.run(plan, jobs=1, fail_fast=False)}
    assert results["wheels"].status == BuildStatus.NOT_BUILT and results["wheels"].status.failed
    assert "Python image" in results["wheels"].detail


def _positional_enum_unpacking(path: Path) -> list[str]:
    """`A, B, C = SomeEnum`: the names follow the members' order, so reordering the enum swaps them silently."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        # A class (an enum) is named in CamelCase; a tuple in a variable (`a, b = job`) is not what this is about.
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Name) and node.value.id[:1].isupper() and \
                any(isinstance(target, ast.Tuple) for target in node.targets):
            found.append(f"{path.name}:{node.lineno}")
    return found


def test_no_enum_members_are_unpacked_by_position():
    offenders = [hit for path in sorted(PACKAGE.rglob("*.py")) for hit in _positional_enum_unpacking(path)]
    assert offenders == []


def test_push_reports_only_the_platform_digests_it_pushed_and_read_back(project):
    items = variants(project)
    registry = FakeRegistry()
    pusher = FakePusher(registry)
    real_manifest = registry.manifest

    def arm64_variant_not_readable(repository, reference):
        found = real_manifest(repository, reference)
        return None if found and found.config_digest == items[1].current.id else found

    registry.manifest = arm64_variant_not_readable
    result = push.IndexPusher(pusher).push_image(items, "reg/ns/img", manifest_list.plain_tags(items))
    assert result.status == "failed"
    assert list(result.platforms) == ["linux/amd64"]  # not the arm64 digest whose read-back failed


def test_one_rule_refuses_stale_images_for_push_and_bundle(project):
    add_connector(project, "mysql")
    settings = settings_mod.load(settings_mod.pyproject_defaults(project), project)
    plan = make_plan(catalog.discover(settings), ["mysql"], FakeEngine(), settings)
    for action in ("push", "bundle"):
        with pytest.raises(FactoryError) as refused:
            require_verified(plan, action)
        assert refused.value.message.startswith(f"refusing to {action} 2 image(s)")
        assert "`inv build-connectors -c mysql`" in refused.value.hint and refused.value.hint.endswith(f"{action} again")


def test_build_list_and_push_have_one_path_for_every_platform_count():
    """The one-platform forks are gone: no function of the command or push modules is only for several."""
    # Read unconditionally: a module that moves fails here instead of passing with nothing checked.
    names = {node.name for path in (PACKAGE / "cli" / "commands.py", PACKAGE / "workflows" / "push.py", PACKAGE / "workflows" / "manifest_list.py",
                                    PACKAGE / "workflows" / "bundle.py")
             for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.FunctionDef)}
    assert not names & {"_build_platforms", "_list_platforms", "require_pushable", "require_current"}
    assert "push" not in {node.name for node in ast.parse((PACKAGE / "workflows" / "manifest_list.py").read_text()).body
                          if isinstance(node, ast.FunctionDef)}


def test_every_status_alias_is_the_member_of_its_name():
    """`UP_TO_DATE = PlanState.UP_TO_DATE`: an alias named like a member of its enum must be that member."""
    checked, wrong = 0, []
    for found in pkgutil.walk_packages([str(PACKAGE)], "ingestion_factory."):
        module = importlib.import_module(found.name)
        for alias, value in vars(module).items():
            if isinstance(value, Status) and alias in type(value).__members__:
                checked += 1
                if value.name != alias:
                    wrong.append(f"{found.name}.{alias} is {type(value).__name__}.{value.name}")
    assert wrong == []
    assert checked >= 12  # plan's and push's aliases at least: the walk did find them
