from rich.console import Console

from benchmarks import bench


def test_bytes_sent_counts_only_uploaded_layers():
    events = [
        {"status": "Preparing", "id": "aaa"},
        {"status": "Layer already exists", "id": "aaa"},
        {"status": "Pushing", "id": "bbb", "progressDetail": {"current": 512, "total": 2048}},
        {"status": "Pushing", "id": "bbb", "progressDetail": {"current": 2048, "total": 2048}},
        {"status": "Pushed", "id": "bbb"},
        {"status": "latest: digest: sha256:abc size: 1234"},
    ]
    assert bench._bytes_sent(iter(events), "x") == (2048, 1)


def test_bytes_sent_raises_on_stream_errors():
    import pytest

    from ingestion_factory.errors import FactoryError

    with pytest.raises(FactoryError, match="denied"):
        bench._bytes_sent(iter([{"error": "denied: requested access to the resource is denied"}]), "x")


def test_the_arm64_bench_is_a_flag_of_inv_bench():
    import tasks

    assert "arm64" in tasks.bench.help
    assert bench.ARM64_MODES == ("cross", "emulated")


def test_the_fragment_change_is_made_in_a_scratch_copy_never_in_the_working_tree(project):
    """A bench killed while it rebuilds the changed connector leaves `git status` clean."""
    import pytest

    from ingestion_factory import settings as settings_mod
    from ingestion_factory.model import catalog as catalog_mod
    from project_tree import add_connector

    (project / "tasks.py").write_text("# tasks\n")
    add_connector(project, "mysql")
    settings = settings_mod.load(settings_mod.pyproject_defaults(project), project)
    before = {path: path.read_bytes() for path in project.rglob("*") if path.is_file()}
    seen = []

    def killed_build(build_settings, names):  # what a kill during the rebuild would leave behind
        seen.append((build_settings.root, {path: path.read_bytes() for path in project.rglob("*") if path.is_file()}))
        raise KeyboardInterrupt

    found = catalog_mod.discover(settings)
    with pytest.raises(KeyboardInterrupt):
        bench.measure_one_fragment_changed(bench.Bench(settings, ["mysql"], Console(quiet=True)), found, None,
                                           build=killed_build)
    [(root, during)] = seen
    assert root != project
    assert during == before
    assert {path: path.read_bytes() for path in project.rglob("*") if path.is_file()} == before
