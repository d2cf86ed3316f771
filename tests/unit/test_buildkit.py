import pytest

from ingestion_factory import buildkit


@pytest.mark.parametrize(
    "version, native",
    [("20.10.24+dfsg1", True), ("18.09.1", True), ("18.06.0-ce", False), ("23.0.1", False), ("28.2.2", False),
     ("garbage", False)],
)
def test_native_buildkit_by_client_version(version, native):
    assert buildkit.native_buildkit(version) is native


def test_no_cli_gives_install_hint(monkeypatch):
    buildkit.find_cli.cache_clear()
    monkeypatch.setenv("FACTORY_DOCKER_CLI", "/nonexistent/docker")
    with pytest.raises(buildkit.DockerUnavailable) as error:
        buildkit.find_cli()
    buildkit.find_cli.cache_clear()
    assert "no BuildKit-capable docker CLI" in error.value.message
    assert "buildx" in error.value.hint


UV_NUMPY = """#8 1.071   × No solution found when resolving dependencies:
#8 1.073   ╰─▶ Because openmetadata-ingestion[bigquery]==1.12.14.2
#8 1.073       depends on numpy<2 and numpy==2.4.6, we can conclude that
#8 1.073       openmetadata-ingestion[bigquery]==1.12.14.2 cannot be used.""".splitlines()

UV_FRAMEWORK = """#8 0.9   × No solution found when resolving dependencies:
#8 0.9   ╰─▶ Because you require acryl-datahub==1.6.0 and acryl-datahub==1.7.0.17, we can
#8 0.9       conclude that your requirements are unsatisfiable.""".splitlines()


def test_conflict_names_the_package_the_base_pins():
    message = buildkit.conflict_summary(UV_NUMPY, "openmetadata-ingestion")
    assert message == "the fragment conflicts with the base: it needs numpy<2 but the base pins numpy==2.4.6"


def test_conflict_on_the_framework_says_so():
    message = buildkit.conflict_summary(UV_FRAMEWORK, "acryl-datahub")
    assert "would change the framework version" in message
    assert "acryl-datahub==1.6.0" in message and "acryl-datahub==1.7.0.17" in message


def test_other_failures_are_not_conflicts():
    assert buildkit.conflict_summary(["#5 1.0 error: Failed to fetch"], "acryl-datahub") is None
