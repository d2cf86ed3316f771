import pytest

from ingestion_factory.engine import buildkit


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
