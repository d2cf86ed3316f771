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
