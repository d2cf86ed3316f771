import json

import pytest
from project_tree import add_connector
from testkit import OM_VERSION

from ingestion_factory import settings as settings_mod
from ingestion_factory.errors import ConfigError
from ingestion_factory.model import catalog


def discover(project):
    settings = settings_mod.load(settings_mod.pyproject_defaults(project), project)
    return catalog.discover(settings)


def test_bases_for_every_framework(project):
    found = discover(project)
    assert {s.name for s in found.bases} == {"base", "base-datahub"}
    assert found["base"].image_name == "ingestion-connector-base"
    assert found["base"].parent is None


def test_connector_defaults_to_the_default_framework_base(project):
    add_connector(project, "mysql", "openmetadata-ingestion[mysql]\n")
    spec = discover(project)["mysql"]
    assert spec.image_name == "ingestion-connector-mysql"
    assert spec.parent == "base"
    assert spec.framework.name == "openmetadata"
    assert spec.source == "mysql"
    assert spec.requirements == ("openmetadata-ingestion[mysql]",)


def test_connector_declares_framework_and_settings(project):
    add_connector(project, "datahub-postgres", "acryl-datahub[postgres]\n", """
        framework = "datahub"
        source = "postgres"
        check_modules = ["psycopg2"]
        os_packages = ["libpq5"]
    """)
    spec = discover(project)["datahub-postgres"]
    assert spec.parent == "base-datahub"
    assert spec.framework.name == "datahub"
    assert spec.check_modules == ("psycopg2",)
    assert spec.os_packages == ("libpq5",)


def test_dependent_connector_inherits_parent_framework(project):
    add_connector(project, "dh", "acryl-datahub[postgres]\n", 'framework = "datahub"\n')
    add_connector(project, "dh-child", "extra-pkg\n", 'parent = "dh"\n')
    spec = discover(project)["dh-child"]
    assert spec.parent == "dh"
    assert spec.framework.name == "datahub"


def test_child_cannot_switch_framework(project):
    add_connector(project, "dh", "acryl-datahub\n", 'framework = "datahub"\n')
    add_connector(project, "om-child", "x\n", 'parent = "dh"\nframework = "openmetadata"\n')
    with pytest.raises(ConfigError, match="declares framework 'openmetadata'"):
        discover(project)


def test_unknown_parent_is_rejected(project):
    add_connector(project, "a", "x\n", 'parent = "nope"\n')
    with pytest.raises(ConfigError, match="unknown parent 'nope'"):
        discover(project)


def test_cycle_is_rejected(project):
    add_connector(project, "a", "x\n", 'parent = "b"\n')
    add_connector(project, "b", "y\n", 'parent = "c"\n')
    add_connector(project, "c", "z\n", 'parent = "a"\n')
    with pytest.raises(ConfigError, match="cycle: .*a.*b|cycle: .*b.*a"):
        discover(project)


@pytest.mark.parametrize(
    "fragment, message",
    [
        ("", "lists no requirements"),
        ("# only a comment\n\n", "lists no requirements"),
        ("pymysql ==== 1\n", r"requirements.txt:1: not a valid requirement"),
        ("ok-package\n--index-url http://x\n", r"requirements.txt:2: pip options"),
    ],
)
def test_bad_fragments(project, fragment, message):
    add_connector(project, "bad", fragment)
    add_connector(project, "good")
    found = discover(project)
    assert "good" in found and "bad" not in found
    with pytest.raises(ConfigError, match=message):
        found.resolve(["bad"])


def test_children_of_a_broken_connector_are_broken_too(project):
    add_connector(project, "bad", "")
    add_connector(project, "child", "x\n", 'parent = "bad"\n')
    found = discover(project)
    assert set(found.broken) == {"bad", "child"}
    assert found.resolve(None) == []


def test_missing_fragment(project):
    (project / "images" / "connectors" / "empty").mkdir()
    with pytest.raises(ConfigError, match="has no requirements.txt"):
        discover(project).resolve(["empty"])


def test_malformed_connector_toml(project):
    add_connector(project, "x", "pkg\n", "framework = \n")
    with pytest.raises(ConfigError, match="connector.toml is not valid TOML"):
        discover(project).resolve(["x"])


def test_unknown_connector_key(project):
    add_connector(project, "x", "pkg\n", 'parnet = "y"\n')
    with pytest.raises(ConfigError, match="unknown key.*parnet"):
        discover(project).resolve(["x"])


def test_bad_os_package_name(project):
    add_connector(project, "x", "pkg\n", 'os_packages = ["libodbc; rm -rf /"]\n')
    with pytest.raises(ConfigError, match="not a Debian package name"):
        discover(project).resolve(["x"])


def test_invalid_directory_name(project):
    add_connector(project, "Bad_Name", "pkg\n")
    with pytest.raises(ConfigError, match="not a valid image name"):
        discover(project).resolve(["Bad_Name"])


def test_resolve_names_and_hints(project):
    add_connector(project, "mysql")
    add_connector(project, "postgres")
    found = discover(project)
    assert found.resolve(None) == ["mysql", "postgres"]
    assert found.resolve(["ingestion-connector-mysql", "mysql"]) == ["mysql"]
    with pytest.raises(ConfigError, match="unknown connector 'mysq'") as error:
        found.resolve(["mysq"])
    assert "did you mean mysql" in error.value.hint


def test_parents_are_the_build_graph(project):
    add_connector(project, "a")
    add_connector(project, "b", "x\n", 'parent = "a"\n')
    found = discover(project)
    assert found.parents == {"base": None, "base-datahub": None, "a": "base", "b": "a"}


@pytest.mark.parametrize(
    "fragment, drifts",
    [
        ("openmetadata-ingestion[mysql]\n", False),
        (f"openmetadata-ingestion[mysql]=={OM_VERSION}\n", False),
        ("openmetadata-ingestion>=1.12\n", False),
        ("openmetadata_ingestion[mysql]==1.11.0.0\n", True),
        ("pymysql\nopenmetadata-ingestion<1.12\n", True),
    ],
)
def test_framework_drift_is_caught_before_building(project, fragment, drifts):
    add_connector(project, "mysql", fragment)
    spec = discover(project)["mysql"]
    message = catalog.framework_drift(spec)
    assert (message is not None) is drifts
    if drifts:
        assert f"openmetadata-ingestion=={OM_VERSION}" in message


@pytest.mark.parametrize("name", ["PARENT_IMAGE", "OS_PACKAGES", "BUILD_PACKAGES", "INSTALL", "IMAGE_VERSION",
                                  "CHECK_MODULES", "HTTPS_PROXY", "BUILDKIT_SYNTAX", "FRAMEWORK_EXTRAS"])
def test_build_args_cannot_override_what_the_factory_sets(project, name):
    add_connector(project, "x", "pkg\n", f'[build_args]\n{name} = "attacker/image"\n')
    with pytest.raises(ConfigError, match=f"build_args: {name} is set by the factory") as caught:
        discover(project).resolve(["x"])
    assert caught.value.exit_code == 2


def test_every_arg_the_shared_dockerfiles_declare_is_reserved(project):
    from ingestion_factory.model.catalog import reserved_build_args

    reserved = reserved_build_args(project / "images" / "base" / "Dockerfile",
                                   project / "images" / "connectors" / "Dockerfile")
    assert {"PARENT_IMAGE", "OS_PACKAGES", "BUILD_PACKAGES", "INSTALL", "PYTHON_IMAGE", "UV_VERSION"} <= reserved


@pytest.mark.parametrize("toml, problem", [
    ('[build_args]\nDB_PASSWORD = "hunter22"\n', "DB_PASSWORD looks like a secret"),
    ('[build_args]\nINDEX_URL = "https://user:s3cretpass@pypi.example.com/simple"\n', "INDEX_URL looks like a secret"),
    ('[build_args]\n"BAD NAME" = "x"\n', "not a valid build argument name"),
])
def test_secret_looking_or_malformed_build_args_are_refused(project, toml, problem):
    add_connector(project, "x", "pkg\n", toml)
    with pytest.raises(ConfigError, match=problem):
        discover(project).resolve(["x"])


def test_an_ordinary_build_arg_is_kept(project):
    add_connector(project, "x", "pkg\n", '[build_args]\nDRIVER_VERSION = "1.2"\n')
    assert discover(project).images["x"].build_args == (("DRIVER_VERSION", "1.2"),)


@pytest.mark.parametrize("package", ["lib odbc", "libpq5;id", "$(id)", "Libpq5", "a", "-y", "libpq5*", "x\ny", "libpq5\n"])
def test_os_and_build_packages_must_be_debian_package_names(project, package):
    for key in ("os_packages", "build_packages"):
        add_connector(project, key.replace("_", "-"), "pkg\n", f"{key} = [{json.dumps(package)}]\n")
        with pytest.raises(ConfigError, match="not a Debian package name") as caught:
            discover(project).resolve([key.replace("_", "-")])
        assert caught.value.exit_code == 2
