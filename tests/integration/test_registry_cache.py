"""The registry as the build cache, and sharded builds, against a real engine and docker-registry.

The DataHub family only: its base, datahub-sqlite and (for the second shard) datahub-elasticsearch.
"Emptying" the engine removes every image of the test's namespace and the refs a push or pull made
for the test registry, so the next build has nothing local to reuse.
"""

from __future__ import annotations

import json

import pytest

from scratch_project import empty_namespace
from testkit import DH_VERSION
from ingestion_factory.model.names import cache_tag
from ingestion_factory.model.shard import shard_of

pytestmark = pytest.mark.registry

SQLITE, ELASTIC = "datahub-sqlite", "datahub-elasticsearch"
FAMILY = {"base-datahub", SQLITE}
# The explicit socket of the local engine: every step below goes through DOCKER_HOST (CLI and SDK).
LOCAL_ENGINE = {"DOCKER_HOST": "unix:///var/run/docker.sock"}


def build_report(project) -> dict:
    return json.loads((project.root / "build" / "reports" / "build-latest.json").read_text())


def results(project) -> dict[str, str]:
    return {image["name"]: image["result"] for image in build_report(project)["images"]}


def image_ids(api, project, names) -> dict[str, str]:
    return {name: api.api.inspect_image(project.ref(name, DH_VERSION))["Id"] for name in names}


@pytest.fixture(scope="module")
def published(module_project, registries, docker_api):
    """datahub-sqlite and its base built and pushed (with their inputs tags) to the open registry."""
    module_project.inv("build-connectors", "-c", SQLITE, env=LOCAL_ENGINE)
    module_project.inv("push", "-c", SQLITE, "--registry", registries.open.host, env=LOCAL_ENGINE)
    ids = image_ids(docker_api, module_project, FAMILY)
    yield module_project, ids
    empty_namespace(docker_api, module_project.namespace, [registries.open.host])


def test_push_publishes_the_inputs_tag(published, registries, docker_api):
    project, ids = published
    pushed = {image["name"]: image for image in
              json.loads((project.root / "build" / "reports" / "push-latest.json").read_text())["images"]}
    for name in FAMILY:
        labels = docker_api.api.inspect_image(ids[name])["Config"]["Labels"]
        tag = cache_tag(labels["io.ingestion-factory.inputs"])
        assert pushed[name]["tags"][-1] == tag
        repository = f"{project.namespace}/ingestion-connector-{name}"
        # The inputs tag names the same manifest as the version tag.
        assert registries.open.manifest_digest(repository, tag) == pushed[name]["digest"]
        assert registries.open.manifest_digest(repository, DH_VERSION) == pushed[name]["digest"]


def test_cache_from_on_an_emptied_engine_pulls_everything_and_builds_nothing(published, registries, docker_api):
    project, ids = published
    host = registries.open.host
    empty_namespace(docker_api, project.namespace, [host])

    done = project.inv("build-connectors", "-c", SQLITE, "--cache-from", host, env=LOCAL_ENGINE)
    assert results(project) == {"base-datahub": "pulled", SQLITE: "pulled"}, done.stdout
    assert "pulled" in done.stdout and "warning" not in done.stdout
    report = build_report(project)
    assert report["cache"]["pulled"] == 2 and report["cache"]["built"] == 0
    by_name = {image["name"]: image for image in report["images"]}
    for name in FAMILY:
        assert by_name[name]["smoke_s"] > 0  # verified like a built image
        assert by_name[name]["image_id"] == ids[name]  # the very image that was pushed
        for tag in (DH_VERSION, "latest"):
            assert docker_api.api.inspect_image(project.ref(name, tag))["Id"] == ids[name]
    child = docker_api.api.inspect_image(ids[SQLITE])["Config"]["Labels"]
    assert child["io.ingestion-factory.parent-id"] == ids["base-datahub"]
    # Nothing under the registry's name was left behind: pulled by digest, that reference dropped once
    # the build's tags were in place (it would keep replaced images alive).
    for image_id in ids.values():
        attrs = docker_api.api.inspect_image(image_id)
        assert not [ref for ref in (attrs.get("RepoTags") or []) + (attrs.get("RepoDigests") or [])
                    if ref.startswith(host + "/")], attrs.get("RepoDigests")

    again = project.inv("build-connectors", "-c", SQLITE, "--cache-from", host)
    assert "up to date; nothing to build" in again.stdout


def test_the_setting_works_like_the_flag_and_a_cache_miss_is_built(published, registries, docker_api):
    project, ids = published
    host = registries.open.host
    fragment = project.connector_dir(SQLITE) / "requirements.txt"
    original = fragment.read_text()
    fragment.write_text(original + "# not in the cache\n")
    try:
        done = project.inv("build-connectors", "-c", SQLITE, env={"INVOKE_FACTORY_CACHE_FROM": host})
    finally:
        fragment.write_text(original)
    assert results(project) == {"base-datahub": "up to date", SQLITE: "built"}, done.stdout
    assert build_report(project)["cache"]["misses"] == [f"{SQLITE}: not in the cache"]
    project.inv("build-connectors", "-c", SQLITE, "--cache-from", host)  # back to the pushed inputs: pulled
    assert results(project)[SQLITE] == "pulled"
    assert image_ids(docker_api, project, [SQLITE])[SQLITE] == ids[SQLITE]


def test_two_shards_one_after_the_other_make_the_full_set(published, registries, docker_api):
    project, ids = published
    host = registries.open.host
    assert shard_of(SQLITE, 2) != shard_of(ELASTIC, 2)  # the two connectors fall in different shards
    names = ["-c", SQLITE, "-c", ELASTIC]
    seen: dict[str, list[str]] = {}
    for index in (1, 2):
        empty_namespace(docker_api, project.namespace, [host])
        project.inv("build-connectors", *names, "--shard", f"{index}/2", "--cache-from", host)
        for name, result in results(project).items():
            seen.setdefault(name, []).append(result)
        shard_connectors = [n for n in (SQLITE, ELASTIC) if shard_of(n, 2) == index]
        assert set(results(project)) == {"base-datahub", *shard_connectors}
        project.inv("push", *[x for n in shard_connectors for x in ("-c", n)], "--registry", host)
    assert set(seen) == {"base-datahub", SQLITE, ELASTIC}  # the full set
    assert seen["base-datahub"] == ["pulled", "pulled"]  # bases come from the cache in every shard
    assert all(results.count("built") <= 1 for results in seen.values()), seen  # nothing built twice
    assert seen[SQLITE] == ["pulled"]  # published before; its shard pulled it

    # What the shards pushed is now one cache: a fresh engine pulls the whole set.
    empty_namespace(docker_api, project.namespace, [host])
    project.inv("build-connectors", *names, "--cache-from", host)
    assert set(results(project).values()) == {"pulled"}


def test_a_registry_that_is_down_or_denies_access_falls_back_to_building(published, registries, docker_api):
    project, _ = published
    for cache, says in ((registries.unused_host(), "connection refused"), (registries.secured.host, "requires a login")):
        empty_namespace(docker_api, project.namespace, [registries.open.host])
        done = project.inv("build-connectors", "-c", SQLITE, "--cache-from", cache, env=LOCAL_ENGINE)
        assert results(project) == {"base-datahub": "built", SQLITE: "built"}, done.stdout
        warnings = [line for line in done.stdout.splitlines() if line.startswith("warning:")]
        assert len(warnings) == 1, done.stdout
        assert cache in warnings[0] and says in warnings[0] and "building instead" in warnings[0]
        assert build_report(project)["cache"]["used"] is False


def test_bad_shard_input_exits_2_before_building(module_project):
    for bad in ("0/3", "4/3", "x", "1/0"):
        done = module_project.inv("build-connectors", "--shard", bad, check=False)
        assert done.returncode == 2, (bad, done.stderr)
        assert "--shard" in done.stderr


def test_list_matrix_gives_stages_and_every_connector_in_one_shard(module_project):
    done = module_project.inv("list", "--matrix", "3", env={"DOCKER_HOST": "unix:///nonexistent.sock"})
    matrix = json.loads(done.stdout)
    assert matrix["stages"][0] == ["base", "base-datahub"] == matrix["bases"]
    assert matrix["shards"] == ["1/3", "2/3", "3/3"]
    sharded = [name for entry in matrix["include"] for name in entry["connectors"]]
    assert sorted(sharded) == sorted(name for stage in matrix["stages"][1:] for name in stage)
    assert len(sharded) == len(set(sharded))
