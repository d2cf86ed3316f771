"""The registry as the build cache, and sharded builds, against a real engine and docker-registry.

The DataHub family only: its base, datahub-sqlite and (for the second shard) datahub-elasticsearch.
"Emptying" the engine removes every image of the test's namespace and the refs a push or pull made
for the test registry, so the next build has nothing local to reuse.
"""

from __future__ import annotations

import json

import pytest
from scratch_project import empty_namespace
from testkit import DH_VERSION, upload_blob

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
    """datahub-sqlite and its base built and pushed (with their inputs tags) to the open registry, and that
    push's report (read now: the shard test pushes again)."""
    module_project.inv("build-connectors", "-c", SQLITE, env=LOCAL_ENGINE)
    module_project.inv("push", "-c", SQLITE, "--registry", registries.open.host, env=LOCAL_ENGINE)
    module_project.push_report = json.loads((module_project.root / "build" / "reports" / "push-latest.json").read_text())
    ids = image_ids(docker_api, module_project, FAMILY)
    yield module_project, ids
    empty_namespace(docker_api, module_project.namespace, [registries.open.host])


def test_push_publishes_the_inputs_tag(published, registries, docker_api):
    project, ids = published
    pushed = {image["name"]: image for image in project.push_report["images"]}
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
    # (This namespace's: the same image may carry another project's pull or push of it, same inputs, same ID.)
    for image_id in ids.values():
        attrs = docker_api.api.inspect_image(image_id)
        assert not [ref for ref in (attrs.get("RepoTags") or []) + (attrs.get("RepoDigests") or [])
                    if ref.startswith(f"{host}/{project.namespace}/")], attrs.get("RepoDigests")

    again = project.inv("build-connectors", "-c", SQLITE, "--cache-from", host)
    assert "up to date; nothing to build" in again.stdout


def test_the_setting_works_like_the_flag_and_a_cache_miss_is_built(published, registries, docker_api):
    project, ids = published
    host = registries.open.host
    # The published images, whatever an earlier test left (a rebuilt base has another ID, so its child's
    # inputs would not be the published ones): pulled from the cache onto an emptied engine.
    empty_namespace(docker_api, project.namespace, [host])
    project.inv("build-connectors", "-c", SQLITE, "--cache-from", host, env=LOCAL_ENGINE)
    assert results(project) == {"base-datahub": "pulled", SQLITE: "pulled"}
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


MANIFEST_TYPES = "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json"


def test_an_entry_for_another_platform_under_the_cache_tag_is_built_with_one_warning(published, registries,
                                                                                     docker_api):
    """The cache tag of datahub-sqlite made to name an arm64 image (same layers and labels, its config saying
    arm64): the build does not pull it; it builds the connector and says why in one warning line."""
    import requests
    from docker.errors import NotFound

    project, _ = published
    host = registries.open.host
    repository = f"{project.namespace}/ingestion-connector-{SQLITE}"
    # The published images, whatever an earlier test left (a rebuilt base has another ID, so its child's
    # inputs would not be the published ones): pulled from the cache onto an emptied engine.
    empty_namespace(docker_api, project.namespace, [host])
    project.inv("build-connectors", "-c", SQLITE, "--cache-from", host, env=LOCAL_ENGINE)
    assert results(project) == {"base-datahub": "pulled", SQLITE: "pulled"}
    ids = image_ids(docker_api, project, [SQLITE])
    labels = docker_api.api.inspect_image(ids[SQLITE])["Config"]["Labels"]
    tag = cache_tag(labels["io.ingestion-factory.inputs"])
    base_url = f"http://{host}/v2/{repository}"
    original = requests.get(f"{base_url}/manifests/{tag}", headers={"Accept": MANIFEST_TYPES}, timeout=10)
    original.raise_for_status()
    media_type = original.headers["Content-Type"]
    manifest = original.json()
    config = requests.get(f"{base_url}/blobs/{manifest['config']['digest']}", timeout=10).json()
    assert config["architecture"] == "amd64"
    config["architecture"] = "arm64"
    forged = json.dumps(config).encode()
    digest = upload_blob(host, repository, forged)
    manifest["config"]["digest"], manifest["config"]["size"] = digest, len(forged)
    put = lambda body: requests.put(f"{base_url}/manifests/{tag}", data=body, headers={"Content-Type": media_type},
                                    timeout=10).raise_for_status()
    put(json.dumps(manifest).encode())
    try:
        # The base stays; the connector is gone from the engine, so its cache tag is asked for.
        for image_tag in docker_api.api.inspect_image(ids[SQLITE]).get("RepoTags") or []:
            docker_api.api.remove_image(image_tag, noprune=True)
        try:
            docker_api.api.remove_image(ids[SQLITE], force=True)
        except NotFound:  # removing its last tag removed it
            pass
        done = project.inv("build-connectors", "-c", SQLITE, "--cache-from", host, env=LOCAL_ENGINE)
    finally:
        put(original.content)  # the published entry again, for whatever runs after this test
    assert results(project) == {"base-datahub": "up to date", SQLITE: "built"}, done.stdout
    assert done.stdout.count("warning:") == 1, done.stdout
    warnings = build_report(project)["cache"]["warnings"]  # the console wraps long lines; the report does not
    assert len(warnings) == 1 and warnings[0].startswith(f"warning: {SQLITE}: "), warnings
    assert "it is a linux/arm64 image, the plan is for linux/amd64" in warnings[0]
    assert "building it instead" in warnings[0]
    assert build_report(project)["cache"]["misses"] == [
        f"{SQLITE}: {host}/{repository}:{tag} does not match: it is a linux/arm64 image, the plan is for linux/amd64"]
    # Nothing was pulled: no image of the registry's repository is in the engine.
    assert not [ref for image in docker_api.api.images() for ref in (image.get("RepoDigests") or [])
                if ref.startswith(f"{host}/{repository}@")]


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
