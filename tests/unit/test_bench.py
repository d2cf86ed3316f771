import pytest
from rich.console import Console

from ingestion_factory.cli import bench


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


def test_inv_bench_passes_its_arm64_sizes_and_baseline_flags_to_the_bench(project, monkeypatch):
    import invoke

    import tasks
    from ingestion_factory import settings as settings_mod

    calls = []
    settings = settings_mod.load(settings_mod.pyproject_defaults(project), project)
    monkeypatch.setattr(tasks, "_settings", lambda c: settings)
    monkeypatch.setattr(bench, "run", lambda settings, connectors, **options: calls.append(options))
    tasks.bench(invoke.Context(), arm64=True)
    tasks.bench(invoke.Context(), sizes=True, baseline="before")
    assert [(c["arm64"], c["sizes"], c["baseline"]) for c in calls] == [(True, False, ""), (False, True, "before")]


def test_the_arm64_bench_builds_each_install_mode_in_a_namespace_of_its_own_and_reports_a_failed_side(
        project, monkeypatch):
    from project_tree import add_connector

    from ingestion_factory import platforms
    from ingestion_factory import settings as settings_mod
    from ingestion_factory.errors import FactoryError

    add_connector(project, "mysql")
    settings = settings_mod.load(settings_mod.pyproject_defaults(project), project)
    builds, emptied = [], []

    def build(build_settings, names, no_cache=False):
        builds.append((build_settings.namespace, build_settings.foreign_install, build_settings.platforms,
                       names, no_cache))
        if build_settings.foreign_install == "emulated":
            raise FactoryError("exec format error")

    monkeypatch.setattr(platforms, "require_emulation", lambda chosen: None)
    monkeypatch.setattr(bench.commands, "build", build)
    monkeypatch.setattr(bench, "remove_tags_under", lambda api, namespace: emptied.append(namespace))
    monkeypatch.setattr(bench, "_last_report", lambda s: {"mysql": {"result": "built", "duration_s": 9.5}}
                        if s.foreign_install == "cross" else {})
    measured = bench.Bench(settings, ["mysql"], Console(quiet=True))
    bench.measure_arm64(measured, api=None)
    sides = [(f"{bench.BENCH_NAMESPACE}-arm64-{mode}", mode, ("linux/arm64",), ["mysql"], True)
             for mode in ("cross", "emulated")]
    assert builds == sides  # both install, with BuildKit's layer cache out of the way (--no-cache)
    assert emptied == [side[0] for side in sides for _ in range(2)]  # each namespace emptied before and after
    assert measured.raw["arm64"]["emulated"]["failed"] == "exec format error"  # reported, not fatal
    assert measured.raw["arm64"]["cross"]["images"]["mysql"]["duration_s"] == 9.5
    assert measured.raw["arm64_fastest"] == "cross"


def test_buildkit_steps_reads_each_steps_time_from_a_plain_progress_log():
    from ingestion_factory.cli.bench import buildkit_steps

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
    from ingestion_factory.cli.bench import buildkit_steps
    from ingestion_factory.engine.buildkit import LOG_RUN_HEADER, last_run

    older = f"\n{LOG_RUN_HEADER}2026-12-01T00:00:00+00:00 pid 1 =====\n#8 [uv 2/2] RUN pip install uv\n#8 DONE 9.0s\n"
    newer = f"\n{LOG_RUN_HEADER}2026-12-02T00:00:00+00:00 pid 2 =====\n#8 [uv 2/2] RUN unzip uv\n#8 CACHED\n"
    assert buildkit_steps(last_run(older + newer)) == [("[uv 2/2] RUN unzip uv", None)]
    assert last_run("#8 [os 1/1] RUN true\n") == "#8 [os 1/1] RUN true\n"


def test_the_fragment_change_is_made_in_a_scratch_copy_never_in_the_working_tree(project):
    """A bench killed while it rebuilds the changed connector leaves `git status` clean."""
    import pytest
    from project_tree import add_connector

    from ingestion_factory import settings as settings_mod
    from ingestion_factory.model import catalog as catalog_mod

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


def _elf(sections: list[tuple[str, int, int]]) -> bytes:
    """A 64-bit little-endian ELF holding only section headers (name, type, size) and their names."""
    import struct

    names = b"\0" + b"".join(name.encode() + b"\0" for name, _, _ in sections) + b".shstrtab\0"
    offsets, at = [], 1
    for name, _, _ in sections:
        offsets.append(at)
        at += len(name) + 1
    headers = [struct.pack("<IIQQQQIIQQ", 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)]  # section 0 is the null section
    headers += [struct.pack("<IIQQQQIIQQ", offset, kind, 0, 0, 0, size, 0, 0, 1, 0)
                for offset, (_, kind, size) in zip(offsets, sections, strict=True)]
    headers.append(struct.pack("<IIQQQQIIQQ", at, 3, 0, 0, 64, len(names), 0, 0, 1, 0))  # .shstrtab
    head = bytearray(64)
    head[:7] = b"\x7fELF\x02\x01\x01"
    struct.pack_into("<Q", head, 0x28, 64 + len(names))  # the section header table, after the names
    struct.pack_into("<HHH", head, 0x3A, 64, len(headers), len(headers) - 1)
    return bytes(head) + names + b"".join(headers)


def test_the_footprint_table_shows_both_sides_and_the_script_reads_elf_sections(tmp_path):
    import io

    from ingestion_factory.resources import footprint

    report = {"total": 300e6, "root": {"/usr": 120e6, "/opt": 180e6}, "usr_lib": {"/usr/lib/python3": 21e6},
              "venv": {"/opt/venv/lib": 180e6}, "venv_kinds": {"bytecode (.pyc)": 40e6},
              "packages": {"numpy": 60e6, "tiny": 1e3}}
    console = Console(file=io.StringIO(), width=200)
    b = bench.Bench(settings=None, connectors=[], console=console)
    bench._footprint_table(b, "openmetadata", {"before": report, "after": dict(report, total=250e6)})
    text = console.file.getvalue()
    assert "300.0" in text and "250.0" in text and "numpy" in text and "tiny" not in text
    sections = [(".text", 1, 100), (".debug_info", 1, 300), (".symtab", 2, 40), (".strtab", 3, 20),
                (".debug_ranges", 8, 500)]  # type 8: NOBITS, takes no bytes in the file
    (tmp_path / "y.so").write_bytes(_elf(sections))
    assert footprint.debug_bytes(str(tmp_path / "y.so")) == 300 + 40 + 20
    (tmp_path / "x.so").write_bytes(b"not an ELF file")
    assert footprint.debug_bytes(str(tmp_path / "x.so")) == 0


def test_the_sizes_bench_measures_the_footprint_next_to_the_baseline_and_builds_nothing(project, monkeypatch,
                                                                                       tmp_path):
    from ingestion_factory import settings as settings_mod

    engine, measured = object(), []
    monkeypatch.setattr(bench, "client", lambda: engine)
    monkeypatch.setattr(bench, "measure_footprint", lambda b, api, baseline="": measured.append((api, baseline)))
    monkeypatch.setattr(bench.commands, "build", lambda *a, **k: pytest.fail("--sizes builds nothing"))
    settings = settings_mod.load(settings_mod.pyproject_defaults(project), project)
    output = bench.run(settings, None, cold=True, push=True, output=tmp_path / "bench.json",
                       console=Console(quiet=True), sizes=True, baseline="before")
    assert measured == [(engine, "before")]
    assert output.is_file()
