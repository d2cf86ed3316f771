"""Reproducible images (#31): the config re-stamp, the clamped trees layers are copied from, each image's epoch."""

import hashlib
import importlib.util
import io
import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest
from fake_engine import FakeEngine, Image, image_id

from ingestion_factory.engine import normalize
from ingestion_factory.workflows import reproducible

REPO = Path(__file__).resolve().parents[2]
EPOCH = 1_700_000_000


def layer_tool():
    spec = importlib.util.spec_from_file_location("layer_tool", REPO / "images" / "base" / "layer.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def inspected(layers=("sha256:" + "a" * 64, "sha256:" + "b" * 64)):
    return {"Architecture": "amd64", "Os": "linux", "RootFS": {"Type": "layers", "Layers": list(layers)},
            "Config": {"User": "ingestion", "Env": ["A=1"], "Labels": {"x": "y"}, "Hostname": "", "Image": "",
                       "AttachStdin": False, "Volumes": None}}


# The engine's /images/{id}/history: newest first, whole seconds.
HISTORY = [
    {"Created": 1800000002, "CreatedBy": "COPY /out/ / # buildkit", "Size": 10, "Comment": "buildkit.dockerfile.v0"},
    {"Created": 1800000001, "CreatedBy": "USER ingestion", "Size": 0},
    {"Created": 1600000000, "CreatedBy": "", "Size": 100, "Comment": "Imported from -"},
]


def test_the_config_carries_the_epoch_and_no_build_time():
    config = json.loads(normalize.config_of(inspected(), HISTORY, 0, EPOCH))
    assert config["created"] == "2023-11-14T22:13:20Z"
    assert [entry["created"] for entry in config["history"]] == ["2023-11-14T22:13:20Z"] * 3
    assert [entry.get("empty_layer", False) for entry in config["history"]] == [False, True, False]
    assert config["config"] == {"User": "ingestion", "Env": ["A=1"], "Labels": {"x": "y"}}  # no engine defaults


def test_the_parents_history_keeps_its_times():
    config = json.loads(normalize.config_of(inspected(), HISTORY, 1, EPOCH))
    assert config["history"][0]["created"] == "2020-09-13T12:26:40Z"
    assert config["history"][2]["created"] == "2023-11-14T22:13:20Z"


def test_the_same_image_gives_the_same_config_bytes():
    assert normalize.config_of(inspected(), HISTORY, 0, EPOCH) == normalize.config_of(inspected(), HISTORY, 0, EPOCH)


def test_a_history_that_does_not_match_the_layers_is_refused():
    with pytest.raises(normalize.NormalizeError, match="names 2 layers, its root file system has 3"):
        normalize.config_of(inspected(layers=["sha256:" + c * 64 for c in "abc"]), HISTORY, 0, EPOCH)


def test_the_load_archive_holds_the_config_and_a_manifest_but_no_layer():
    config = normalize.config_of(inspected(), HISTORY, 0, EPOCH)
    with tarfile.open(fileobj=io.BytesIO(normalize.load_archive(config, inspected()["RootFS"]["Layers"]))) as archive:
        name = hashlib.sha256(config).hexdigest() + ".json"
        assert archive.getnames() == [name, "manifest.json"]
        manifest = json.load(archive.extractfile("manifest.json"))
        assert manifest == [{"Config": name, "RepoTags": None, "Layers": ["a" * 64 + "/layer.tar", "b" * 64 + "/layer.tar"]}]


def engine_with_a_build() -> FakeEngine:
    """The image BuildKit wrote (`built`, on `parent`'s one layer), as the engine answers for it."""
    engine = FakeEngine()
    info = inspected()
    engine.add(image_id("built"), tags=["built"], layers=info["RootFS"]["Layers"], history=HISTORY)
    engine.add(image_id("parent"), tags=["parent"], layers=["sha256:" + "a" * 64], history=HISTORY[2:])
    return engine


def test_restamp_loads_the_config_once_and_names_the_image_by_its_hash():
    engine = engine_with_a_build()
    built = engine.inspect_raw("built")
    expected = normalize.config_of(built, HISTORY, 1, EPOCH)
    new_id = "sha256:" + hashlib.sha256(expected).hexdigest()
    engine.archive_images = [Image(new_id, layers=built["RootFS"]["Layers"])]  # what the engine finds in the load
    first = normalize.restamp(engine, "built", "parent", EPOCH)
    assert first.image_id == new_id
    with tarfile.open(fileobj=io.BytesIO(engine.received)) as archive:  # only the config and the manifest
        assert sorted(archive.getnames()) == sorted([new_id[7:] + ".json", "manifest.json"])
        assert archive.extractfile(new_id[7:] + ".json").read() == expected
    assert normalize.restamp(engine, "built", "parent", EPOCH).image_id == first.image_id
    assert [entry for entry in engine.log if entry.startswith("load ")] == [f"load {new_id}"]  # once: then known


def test_a_load_that_brings_no_image_is_a_normalize_error():
    engine = engine_with_a_build()  # archive_images empty: the engine loaded nothing it could name
    with pytest.raises(normalize.NormalizeError, match="has no sha256:"):
        normalize.restamp(engine, "built", "parent", EPOCH)


def test_clamp_moves_only_later_times(tmp_path, monkeypatch):
    tool = layer_tool()
    (tmp_path / "d").mkdir()
    old, new = tmp_path / "d" / "old", tmp_path / "d" / "new"
    old.write_text("o")
    new.write_text("n")
    os.utime(old, (EPOCH - 10, EPOCH - 10))
    (tmp_path / "d" / "link").symlink_to("missing")
    tool.clamp(tmp_path, EPOCH)
    assert old.stat().st_mtime == EPOCH - 10
    assert new.stat().st_mtime == EPOCH
    assert (tmp_path / "d").stat().st_mtime == EPOCH
    assert (tmp_path / "d" / "link").lstat().st_mtime == EPOCH


def test_capture_copies_what_changed_with_the_modes_of_the_directories_above(tmp_path):
    tool = layer_tool()
    root = tmp_path / "root"
    (root / "keep").mkdir(parents=True)
    (root / "keep" / "before").write_text("b")
    (root / "private").mkdir(mode=0o700)
    marker = tmp_path / "marker"
    marker.touch()
    os.utime(marker, ns=(marker.stat().st_mtime_ns, (root / "keep" / "before").stat().st_ctime_ns + 1))
    (root / "private" / "added").write_text("a")
    out = tmp_path / "out"
    tool.capture(out, marker.stat().st_mtime_ns, [root])
    copied = out / root.relative_to("/")
    assert (copied / "private" / "added").read_text() == "a"
    assert not (copied / "keep" / "before").exists()
    assert (copied / "private").stat().st_mode & 0o777 == 0o700


def git(root, *args, date=None):
    env = dict(os.environ, GIT_AUTHOR_DATE=date or "", GIT_COMMITTER_DATE=date or "", GIT_AUTHOR_NAME="t",
               GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t")
    subprocess.run(["git", *args], cwd=root, env=env, check=True, capture_output=True)


def test_the_epoch_is_the_newest_commit_of_the_inputs_not_of_the_repository(tmp_path):
    git(tmp_path, "init", "-q")
    (tmp_path / "a").write_text("1")
    git(tmp_path, "add", "a")
    git(tmp_path, "commit", "-qm", "a", date="@1700000000 +0000")
    (tmp_path / "b").write_text("2")
    git(tmp_path, "add", "b")
    git(tmp_path, "commit", "-qm", "b", date="@1700000500 +0000")
    assert reproducible.commit_time(tmp_path, (tmp_path / "a",)) == 1700000000
    assert reproducible.commit_time(tmp_path, (tmp_path / "a", tmp_path / "b")) == 1700000500
    assert reproducible.commit_time(tmp_path / "..", ()) == 0


def test_the_parents_epoch_is_its_label_else_its_creation():
    engine = FakeEngine()
    engine.add(image_id("labelled"), {"io.ingestion-factory.source-date-epoch": "1700000123"}, tags=["labelled"])
    engine.add(image_id("python"), tags=["python"], created="2023-11-14T22:13:20.123456789Z")
    assert reproducible.parent_epoch(engine, "labelled") == 1700000123
    assert reproducible.parent_epoch(engine, "python") == EPOCH
    assert reproducible.parent_epoch(engine, "missing") == 0


def test_the_attestation_records_the_epoch_inv_rebuild_needs():
    from ingestion_factory.model import trust_records
    from ingestion_factory.workflows import trust_sign

    labels = {"io.ingestion-factory.source-date-epoch": "1700000123", "org.opencontainers.image.revision": "abc",
              "io.ingestion-factory.parent-id": image_id("parent")}
    record = trust_sign.record_of("datahub-sqlite", "linux/amd64", image_id("x"), labels, "")
    assert record.source_date_epoch == "1700000123"
    internal = trust_records.statement("ns/a", "sha256:" + "1" * 64, record)["predicate"]["buildDefinition"][
        "internalParameters"]
    assert internal["sourceDateEpoch"] == "1700000123"
    # A record written before the field existed still reads.
    older = {k: v for k, v in record.as_dict().items() if k != "source_date_epoch"}
    assert trust_records.VerificationRecord.from_dict(older).source_date_epoch == ""
