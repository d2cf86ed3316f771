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
