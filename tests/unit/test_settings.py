from pathlib import Path

import pytest
from testkit import OM_OTHER_VERSIONS

from ingestion_factory import settings as settings_mod
from ingestion_factory.errors import ConfigError


def load(project: Path, **overrides):
    data = settings_mod.pyproject_defaults(project)
    data.update(overrides)
    return settings_mod.load(data, project)


def test_defaults_come_from_pyproject(project):
    settings = load(project)
    assert settings.python_image == "python:3.11-slim-bookworm"
    assert settings.framework == "openmetadata"
    assert settings.frameworks["openmetadata"].package == "openmetadata-ingestion"
    assert settings.frameworks["datahub"].base_image == "ingestion-connector-base-datahub"


def test_overrides_win_and_none_means_keep(project):
    settings = load(project).with_overrides(tag="9.9", registry=None)
    assert settings.tag == "9.9"
    assert settings.registry == ""


def test_repository_includes_registry_only_when_set(project):
    assert load(project).repository("x") == "openmetadata/x"
    assert load(project, registry="127.0.0.1:5000", namespace="acme").repository("x") == "127.0.0.1:5000/acme/x"


def test_unknown_setting_is_rejected_with_known_ones(project):
    with pytest.raises(ConfigError, match="unknown setting.*regsitry"):
        load(project, regsitry="x")


def test_unknown_default_framework_is_rejected(project):
    with pytest.raises(ConfigError, match="unknown framework 'airbyte'"):
        load(project, framework="airbyte")


@pytest.mark.parametrize("jobs", ["0", "many", -1])
def test_bad_jobs(project, jobs):
    with pytest.raises(ConfigError, match="jobs"):
        load(project, jobs=jobs)


def test_framework_version_override(project):
    settings = settings_mod.with_framework_version(load(project), "openmetadata", OM_OTHER_VERSIONS[-1])
    assert settings.frameworks["openmetadata"].requirement == f"openmetadata-ingestion=={OM_OTHER_VERSIONS[-1]}"


@pytest.mark.parametrize(
    "tag, revision, expected",
    [
        ("1.12.14.2", "abc123", ["1.12.14.2", "abc123", "latest"]),
        ("2.0.0rc1", "abc123", ["2.0.0rc1", "abc123"]),
        ("1.0.dev3", None, ["1.0.dev3"]),
        ("nightly", None, ["nightly", "latest"]),
    ],
)
def test_image_tags_skip_latest_for_prereleases(tag, revision, expected):
    assert settings_mod.image_tags(tag, revision) == expected


def test_ca_bundle_auto_finds_a_file(project, tmp_path, monkeypatch):
    bundle = tmp_path / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    assert load(project).resolved_ca_bundle() == bundle
    assert load(project, ca_bundle="").resolved_ca_bundle() is None
    with pytest.raises(ConfigError, match="does not exist"):
        load(project, ca_bundle=str(tmp_path / "missing.pem")).resolved_ca_bundle()


def test_plain_unwraps_nested_mappings():
    class Proxy:
        def __init__(self, data):
            self.data = data

        def keys(self):
            return self.data.keys()

        def __getitem__(self, key):
            value = self.data[key]
            return Proxy(value) if isinstance(value, dict) else value

    assert settings_mod.plain(Proxy({"a": {"b": 1}})) == {"a": {"b": 1}}


@pytest.mark.parametrize("tag, pre", [("2.0-rc1", True), ("nightly-dev", True), ("1.0.beta", True),
                                      ("devops", False), ("march-2025", False), ("resource-1", False),
                                      ("1.12.14.2", False), ("1.13.0rc2", True)])
def test_prerelease_detection_by_token(tag, pre):
    assert settings_mod.is_prerelease(tag) is pre
