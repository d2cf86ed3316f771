"""Signed provenance end to end: `inv keys generate`, a signed `inv push` to a real docker-registry,
`inv verify` of what is there, and the exit code and message when it is tampered with or checked with
another key. The DataHub base and datahub-sqlite, as in test_push.py."""

from __future__ import annotations

import base64
import json

import pytest
import requests
from scratch_project import SIGNING_ENV, signing_family
from testkit import upload_blob

pytestmark = pytest.mark.registry

ENV = SIGNING_ENV
SIGNED_TYPE = "application/vnd.dev.cosign.simplesigning.v1+json"
DSSE_TYPE = "application/vnd.dsse.envelope.v1+json"
OCI = "application/vnd.oci.image.manifest.v1+json"


@pytest.fixture(scope="module")
def signed(module_project, registries):
    """Keys generated, the family built and pushed with signing on; returns (project, registry, push report)."""
    project = signing_family(module_project)
    project.inv("push", "-c", "datahub-sqlite", "--registry", registries.open.host, env=ENV)
    report = json.loads((project.root / "build" / "reports" / "push-latest.json").read_text())
    return project, registries.open, report


def get(registry, path: str, accept: str = OCI) -> requests.Response:
    response = requests.get(f"http://{registry.host}/v2/{path}", headers={"Accept": accept}, timeout=10)
    response.raise_for_status()
    return response


def test_keys_generate_writes_an_encrypted_p256_pair(signed):
    project, _, _ = signed
    private = (project.root / "keys" / "factory-signing.key").read_text()
    assert private.startswith("-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert (project.root / "keys" / "factory-signing.key").stat().st_mode & 0o777 == 0o600
    again = project.inv("keys", "generate", "--output", "keys", env=ENV, check=False)
    assert again.returncode == 2 and "already exist" in again.stderr


def test_every_pushed_digest_has_a_signature_and_an_attestation_in_cosigns_layout(signed):
    project, registry, report = signed
    assert {image["name"] for image in report["images"]} == {"base-datahub", "datahub-sqlite"}
    for image in report["images"]:
        assert image["result"] == "pushed", image
        digest = image["digest"]
        assert image["signed"] == {digest: "signed"}
        path = image["repository"].removeprefix(registry.host + "/")
        hexdigest = digest.removeprefix("sha256:")
        sig = get(registry, f"{path}/manifests/sha256-{hexdigest}.sig").json()
        att = get(registry, f"{path}/manifests/sha256-{hexdigest}.att").json()
        assert sig["mediaType"] == OCI and sig["layers"][0]["mediaType"] == SIGNED_TYPE
        assert sig["layers"][0]["annotations"]["dev.cosignproject.cosign/signature"]
        payload = json.loads(get(registry, f"{path}/blobs/{sig['layers'][0]['digest']}").content)
        assert payload["critical"]["image"]["docker-manifest-digest"] == digest
        assert payload["critical"]["identity"]["docker-reference"] == image["repository"]
        assert att["layers"][0]["mediaType"] == DSSE_TYPE
        assert att["layers"][0]["annotations"]["predicateType"] == "https://slsa.dev/provenance/v1"
        envelope = json.loads(get(registry, f"{path}/blobs/{att['layers'][0]['digest']}").content)
        assert envelope["payloadType"] == "application/vnd.in-toto+json"
        statement = json.loads(base64.b64decode(envelope["payload"]))
        assert statement["_type"] == "https://in-toto.io/Statement/v1"
        assert statement["subject"][0]["digest"] == {"sha256": hexdigest}
        [record] = [b["annotations"] for b in statement["predicate"]["runDetails"]["byproducts"]
                    if b["name"] == "ingestion-factory-verification"]
        assert record["smoke_result"] == "passed" and record["platform"] == "linux/amd64"
        assert record["image_id"] == image["image_id"] and record["input_hash"].startswith("sha256:")
        assert record["sbom_digest"].startswith("sha256:") and record["lock_digest"].startswith("sha256:")


def test_verify_passes_and_a_second_push_signs_nothing_new(signed):
    project, registry, _ = signed
    done = project.inv("verify", "-c", "datahub-sqlite", "--registry", registry.host, "--json")
    result = json.loads(done.stdout)
    assert result["verified"] is True
    checks = {c["check"]: c for c in result["images"][0]["checks"]}
    assert "input hash matches the plan" in checks["policy"]["detail"]
    by_reference = project.inv("verify", f"{registry.host}/{project.namespace}/ingestion-connector-base-datahub:"
                               f"{result['images'][0]['record']['framework_version']}")
    assert by_reference.returncode == 0
    again = project.inv("push", "-c", "datahub-sqlite", "--registry", registry.host, env=ENV)
    assert "signature present, attestation present" in again.stdout


def test_cache_from_with_trusted_keys_pulls_attested_images_without_smoke_tests_and_builds_untrusted_ones(
        signed, docker_api, tmp_path):
    from scratch_project import remove_namespace_images, remove_tags_under

    project, registry, _ = signed

    def empty_engine():
        remove_tags_under(docker_api, f"{registry.host}/{project.namespace}")
        remove_namespace_images(docker_api, project.namespace)

    empty_engine()
    pulled = project.inv("build-connectors", "-c", "datahub-sqlite", "--cache-from", registry.host)
    for image in project.report().values():
        assert image["result"] == "pulled", (image, pulled.stdout[-3000:])
        assert "signed and attested: smoke test not re-run" in image["reason"]
        assert image["smoke_s"] == 0
    assert "not trusted" not in pulled.stdout

    project.inv("keys", "generate", "--output", str(tmp_path / "other"), env=ENV)
    empty_engine()
    built = project.inv("build-connectors", "-c", "datahub-sqlite", "--cache-from", registry.host,
                        env={"INVOKE_FACTORY_TRUSTED_KEYS": str(tmp_path / "other" / "factory-signing.pub")})
    assert {image["result"] for image in project.report().values()} == {"built"}
    cache = json.loads((project.root / "build" / "reports" / "build-latest.json").read_text())["cache"]
    # One line per untrusted image found, naming why. The base is rebuilt (a new image ID), so the
    # connector's inputs change and its lookup is a plain miss.
    assert cache["warnings"] and cache["warnings"][0].startswith("warning: base-datahub: "), cache
    assert all("is not trusted (signature check failed" in line for line in cache["warnings"])
    assert "is not trusted" in built.stdout


def test_unbundle_push_leaves_proofs_on_the_mirror_that_verify_and_the_cache_takes(signed, empty_registry, docker_api,
                                                                                  tmp_path):
    """A signed bundle pushed to a mirror by an operator without the signing key: `inv verify` passes there
    (the bundle's proofs name the image IDs, which the mirror's manifests name), and --cache-from takes the
    images as attested. With a signing key, the mirror's digests are signed too, as cosign expects."""
    from scratch_project import remove_namespace_images, remove_tags_under

    project, _, _ = signed
    mirror = empty_registry
    path = tmp_path / "signed.bundle"
    project.inv("bundle", "-c", "datahub-sqlite", "-o", str(path), env=ENV)
    no_key = {"INVOKE_FACTORY_SIGNING_KEY": ""}
    done = project.inv("unbundle", str(path), "--push", mirror.host, env=no_key)
    assert "the bundle's signature copied, attestation copied" in done.stdout, done.stdout[-3000:]
    assert "carry no signature" not in done.stdout
    pushed = json.loads((project.root / "build" / "reports" / "push-latest.json").read_text())
    assert [set(image["signed"].values()) for image in pushed["images"]] == [{"copied from the bundle"}] * 2

    for name in ("base-datahub", "datahub-sqlite"):
        verified = project.inv("verify", "-c", name, "--registry", mirror.host, "--json", check=False)
        result = json.loads(verified.stdout)
        assert verified.returncode == 0 and result["verified"] is True, verified.stdout
        checks = {c["check"]: c["detail"] for c in result["images"][0]["checks"]}
        assert "by its image ID" in checks["subject"] and "input hash matches the plan" in checks["policy"]

    remove_tags_under(docker_api, f"{mirror.host}/{project.namespace}")
    remove_namespace_images(docker_api, project.namespace)
    pulled = project.inv("build-connectors", "-c", "datahub-sqlite", "--cache-from", mirror.host)
    for image in project.report().values():
        assert image["result"] == "pulled", (image, pulled.stdout[-3000:])
        assert "signed and attested: smoke test not re-run" in image["reason"]
    assert "not trusted" not in pulled.stdout

    # The operator has a signing key: each mirror digest also gets cosign's own signature of it.
    signed_here = project.inv("unbundle", str(path), "--push", mirror.host, env=ENV)
    assert "signature signed, attestation signed" in signed_here.stdout, signed_here.stdout[-3000:]
    image = next(i for i in json.loads((project.root / "build" / "reports" / "push-latest.json").read_text())
                 ["images"] if i["name"] == "datahub-sqlite")
    assert image["signed"] == {image["digest"]: "signed"}
    path_on_mirror = image["repository"].removeprefix(mirror.host + "/")
    sig = get(mirror, f"{path_on_mirror}/manifests/sha256-{image['digest'].removeprefix('sha256:')}.sig").json()
    named = [json.loads(get(mirror, f"{path_on_mirror}/blobs/{layer['digest']}").content)["critical"]["image"]
             ["docker-manifest-digest"] for layer in sig["layers"]]
    assert named == [image["image_id"], image["digest"]]  # the bundle's (by image ID), then the mirror digest's
    assert project.inv("verify", "-c", "datahub-sqlite", "--registry", mirror.host, check=False).returncode == 0


def test_an_images_proofs_copied_under_another_repository_do_not_verify_there(signed):
    """datahub-sqlite with its .sig and .att copied under base-datahub's repository (blobs mounted, the same
    manifests, a tag `copied`): a trusted key signed them, but for datahub-sqlite's repository (#29)."""
    project, registry, report = signed
    images = {image["name"]: image for image in report["images"]}
    source = images["datahub-sqlite"]["repository"].removeprefix(registry.host + "/")
    target = images["base-datahub"]["repository"].removeprefix(registry.host + "/")
    digest = images["datahub-sqlite"]["digest"]
    hexdigest = digest.removeprefix("sha256:")
    accept = ", ".join((OCI, "application/vnd.docker.distribution.manifest.v2+json"))
    for reference, tag in ((digest, "copied"), (f"sha256-{hexdigest}.sig",) * 2, (f"sha256-{hexdigest}.att",) * 2):
        response = get(registry, f"{source}/manifests/{reference}", accept=accept)
        manifest = response.json()
        for blob in [manifest["config"], *manifest["layers"]]:
            requests.post(f"http://{registry.host}/v2/{target}/blobs/uploads/",
                          params={"mount": blob["digest"], "from": source}, timeout=10).raise_for_status()
        requests.put(f"http://{registry.host}/v2/{target}/manifests/{tag}", data=response.content, timeout=10,
                     headers={"Content-Type": response.headers["Content-Type"]}).raise_for_status()
    copied = project.inv("verify", f"{registry.host}/{target}:copied", check=False)
    assert copied.returncode == 1, copied.stdout[-2000:]
    assert "signature check failed" in copied.stderr and f"signed for {registry.host}/{source}" in copied.stderr
    # Under its own repository, by the version its tag names, it verifies: for datahub-sqlite at that version.
    own = project.inv("verify", f"{registry.host}/{source}:{images['datahub-sqlite']['tags'][0]}", "--json",
                      check=False)
    assert own.returncode == 0, own.stdout[-2000:]
    policy = {c["check"]: c["detail"] for c in json.loads(own.stdout)["images"][0]["checks"]}["policy"]
    assert "image datahub-sqlite" in policy and "only (input hash not checked" in policy, policy


def test_another_key_or_one_changed_byte_of_the_attestation_fails_with_exit_1(signed, tmp_path):
    """Last in the module: it leaves datahub-sqlite's attestation broken."""
    project, registry, report = signed
    project.inv("keys", "generate", "--output", str(tmp_path / "other"), env=ENV)
    other = project.inv("verify", "-c", "datahub-sqlite", "--registry", registry.host, check=False,
                        env={"INVOKE_FACTORY_TRUSTED_KEYS": str(tmp_path / "other" / "factory-signing.pub")})
    assert other.returncode == 1, other.stderr
    assert "signature check failed" in other.stderr

    # One byte of the attestation changed, stored back as the attestation manifest's layer.
    image = next(i for i in report["images"] if i["name"] == "datahub-sqlite")
    path = image["repository"].removeprefix(registry.host + "/")
    tag = "sha256-" + image["digest"].removeprefix("sha256:") + ".att"
    manifest = get(registry, f"{path}/manifests/{tag}").json()
    layer = manifest["layers"][-1]
    envelope = json.loads(get(registry, f"{path}/blobs/{layer['digest']}").content)
    statement = bytearray(base64.b64decode(envelope["payload"]))
    statement[statement.index(b"passed")] = ord("P")
    envelope["payload"] = base64.b64encode(bytes(statement)).decode()
    tampered = json.dumps(envelope).encode()
    digest = upload_blob(registry.host, path, tampered)
    layer["digest"], layer["size"] = digest, len(tampered)
    requests.put(f"http://{registry.host}/v2/{path}/manifests/{tag}", data=json.dumps(manifest).encode(),
                 headers={"Content-Type": OCI}, timeout=10).raise_for_status()

    broken = project.inv("verify", "-c", "datahub-sqlite", "--registry", registry.host, check=False)
    assert broken.returncode == 1
    assert "attestation check failed" in broken.stderr and "does not verify" in broken.stderr
    # The other image of the family is untouched and still verifies.
    assert project.inv("verify", "-c", "base-datahub", "--registry", registry.host, check=False).returncode == 0

