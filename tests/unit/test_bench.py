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


def test_buildkit_steps_reads_each_steps_time_from_a_plain_progress_log():
    from benchmarks.bench import buildkit_steps

    log = "\n".join([
        "#1 [internal] load build definition from Dockerfile",
        "#1 DONE 0.0s",
        "#6 [uv 2/2] RUN --mount=type=cache,target=/root/.cache/pip     --mount=type=secret,id=ca     python3 -m venv /opt/uv",
        "#5 [os 2/2] RUN true",
        "#5 CACHED",
        "#6 0.512 Collecting uv",
        "#6 DONE 10.3s",
        "#10 [sbom-target 1/1] RUN /opt/sbom-tool/bin/python make_sbom.py",
        "#10 DONE 2.4s",
        "#12 exporting to image",
        "#12 exporting layers 0.1s done",
        "#12 DONE 0.1s",
    ])
    assert buildkit_steps(log) == [
        ("[uv 2/2] RUN python3 -m venv /opt/uv", 10.3),
        ("[os 2/2] RUN true", None),
        ("[sbom-target 1/1] RUN /opt/sbom-tool/bin/python make_sbom.py", 2.4),
        ("exporting to image", 0.1),
    ]


def test_the_step_table_reads_only_the_newest_run_of_an_appended_log():
    """Build logs are appended run after run: an earlier run's step #8 must not name this run's."""
    from benchmarks.bench import buildkit_steps
    from ingestion_factory.engine.buildkit import LOG_RUN_HEADER, last_run

    older = f"\n{LOG_RUN_HEADER}2026-12-01T00:00:00+00:00 pid 1 =====\n#8 [uv 2/2] RUN pip install uv\n#8 DONE 9.0s\n"
    newer = f"\n{LOG_RUN_HEADER}2026-12-02T00:00:00+00:00 pid 2 =====\n#8 [uv 2/2] RUN unzip uv\n#8 CACHED\n"
    assert buildkit_steps(last_run(older + newer)) == [("[uv 2/2] RUN unzip uv", None)]
    assert last_run("#8 [os 1/1] RUN true\n") == "#8 [os 1/1] RUN true\n"


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


def test_the_footprint_table_shows_both_sides_and_the_script_reads_elf_sections(tmp_path):
    import io
    import sys

    from benchmarks import footprint

    report = {"total": 300e6, "root": {"/usr": 120e6, "/opt": 180e6}, "usr_lib": {"/usr/lib/python3": 21e6},
              "venv": {"/opt/venv/lib": 180e6}, "venv_kinds": {"bytecode (.pyc)": 40e6},
              "packages": {"numpy": 60e6, "tiny": 1e3}}
    console = Console(file=io.StringIO(), width=200)
    b = bench.Bench(settings=None, connectors=[], console=console)
    bench._footprint_table(b, "openmetadata", {"before": report, "after": dict(report, total=250e6)})
    text = console.file.getvalue()
    assert "300.0" in text and "250.0" in text and "numpy" in text and "tiny" not in text
    assert footprint.debug_bytes(sys.executable) >= 0
    (tmp_path / "x.so").write_bytes(b"not an ELF file")
    assert footprint.debug_bytes(str(tmp_path / "x.so")) == 0


def test_the_sizes_bench_is_a_flag_of_inv_bench():
    import tasks

    assert "sizes" in tasks.bench.help and "baseline" in tasks.bench.help
