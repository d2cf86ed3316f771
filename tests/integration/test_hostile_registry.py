"""A registry that lies (lying_registry.py, in front of a real docker-registry): what `inv push` signs,
what `inv verify` believes, and what `--cache-from` and `unbundle --push` do when its answers are not the
bytes they claim to be. The DataHub base and datahub-sqlite, as in test_signing.py; the tests run in order."""

from __future__ import annotations

import json
import time

import pytest
from lying_registry import ACCEPT, Answer, nested_json
from scratch_project import SIGNING_ENV, signing_family
from testkit import DH_VERSION

pytestmark = pytest.mark.registry

ENV = SIGNING_ENV
FAKE_DIGEST = "sha256:" + "f" * 64
SQLITE = "ingestion-connector-datahub-sqlite"
BASE = "ingestion-connector-base-datahub"


@pytest.fixture(scope="module")
def hostile(module_project, lying_registry):
    """Keys, the family built, and the liar in front of a real registry: (project, liar)."""
    return signing_family(module_project), lying_registry


@pytest.fixture
def liar(hostile):
    _, lying = hostile
    lying.clear()
    yield lying
    lying.clear()


def path_of(project, repository: str) -> str:
    return f"/v2/{project.namespace}/{repository}"


def real_tags(liar, project, repository: str) -> list[str]:
    answer = liar.fetch("GET", f"{path_of(project, repository)}/tags/list")
    return json.loads(answer.body).get("tags") or [] if answer.status == 200 else []


def proofs(tags: list[str]) -> list[str]:
    return sorted(t for t in tags if t.endswith((".sig", ".att")))


def pushed_image(project, name: str) -> dict:
    report = json.loads((project.root / "build" / "reports" / "push-latest.json").read_text())
    return next(i for i in report["images"] if i["name"] == name)


def test_a_digest_header_that_is_not_the_body_s_fails_the_push_naming_the_registry_and_signs_nothing(hostile, liar):
    project, _ = hostile
    liar.header_digest(rf"{path_of(project, SQLITE)}/manifests/", FAKE_DIGEST)
    done = project.inv("push", "-c", "datahub-sqlite", "--registry", liar.host, env=ENV, check=False)
    assert done.returncode == 1, done.stdout[-3000:]
    output = done.stdout + done.stderr
    assert f"{liar.host} names the digest" in output and FAKE_DIGEST[:19] in output
    assert liar.lied
    assert proofs(real_tags(liar, project, SQLITE)) == []  # no .sig/.att for any digest of it
    assert pushed_image(project, "base-datahub")["result"] == "pushed"  # the honest answers were taken


def test_a_body_made_up_for_the_tag_is_not_signed_the_digest_the_registry_holds_is(hostile, liar):
    """The tag read answers our image's manifest re-serialized (our config, other bytes, an honest header for
    them): the registry does not hold those bytes, so they are not "already present" and are never signed;
    the push goes on and signs the digest the registry does hold."""
    project, _ = hostile
    made_up: list[str] = []

    def reserialize(_, answer, __):
        body = json.dumps(json.loads(answer.body), indent=1).encode()
        import hashlib

        made_up.append("sha256:" + hashlib.sha256(body).hexdigest())
        headers = dict(answer.headers, **{"Docker-Content-Digest": made_up[-1]})
        return Answer(answer.status, headers, body)

    liar.lie("GET", rf"{path_of(project, SQLITE)}/manifests/{DH_VERSION}$", reserialize, times=1)
    done = project.inv("push", "-c", "datahub-sqlite", "--registry", liar.host, env=ENV, check=False)
    assert done.returncode == 0, done.stdout[-3000:]
    assert made_up, "the liar was never asked for the tag"
    image = pushed_image(project, "datahub-sqlite")
    assert image["digest"] != made_up[0] and image["signed"] == {image["digest"]: "signed"}
    tags = proofs(real_tags(liar, project, SQLITE))
    hexdigest = image["digest"].removeprefix("sha256:")
    assert tags == [f"sha256-{hexdigest}.att", f"sha256-{hexdigest}.sig"]


def test_verify_exits_1_when_the_registry_swaps_the_body_or_redirects_under_the_signed_digest(hostile, liar):
    project, _ = hostile
    assert project.inv("verify", "-c", "datahub-sqlite", "--registry", liar.host, check=False).returncode == 0
    sqlite, base = pushed_image(project, "datahub-sqlite"), pushed_image(project, "base-datahub")

    liar.swap_body(rf"{path_of(project, SQLITE)}/manifests/{sqlite['digest']}$",
                   f"{path_of(project, BASE)}/manifests/{base['digest']}")
    swapped = project.inv("verify", "-c", "datahub-sqlite", "--registry", liar.host, check=False)
    assert swapped.returncode == 1, swapped.stdout + swapped.stderr
    assert "but the body's sha256 is" in swapped.stderr  # the header kept, the body another's

    liar.clear()  # the other body with its own honest header: it is not what was asked for
    liar.lie("GET", rf"{path_of(project, SQLITE)}/manifests/{sqlite['digest']}$",
             lambda lying, _, __: lying.fetch("GET", f"{path_of(project, BASE)}/manifests/{base['digest']}",
                                              {"Accept": ACCEPT}), forward=False)
    honest_header = project.inv("verify", "-c", "datahub-sqlite", "--registry", liar.host, check=False)
    assert honest_header.returncode == 1 and "not the digest asked for" in honest_header.stderr

    liar.clear()
    liar.redirect(rf"{path_of(project, SQLITE)}/manifests/{sqlite['digest']}$",
                  f"http://{liar.host}{path_of(project, BASE)}/manifests/{base['digest']}")
    redirected = project.inv("verify", f"{liar.host}/{project.namespace}/{SQLITE}@{sqlite['digest']}",
                             check=False)
    assert redirected.returncode == 1, redirected.stdout + redirected.stderr


def test_another_connectors_image_and_proofs_under_a_connectors_name_exit_1(hostile, liar):
    """Every read under datahub-sqlite's repository answered from base-datahub's: its manifest, its
    signature and its attestation, all genuine and signed by our key, but about another image."""
    project, _ = hostile

    def from_base(lying, _, path):
        return lying.fetch("GET", path.replace(f"/{SQLITE}/", f"/{BASE}/"), {"Accept": ACCEPT})

    liar.lie("GET", rf"{path_of(project, SQLITE)}/", from_base, forward=False)
    done = project.inv("verify", f"{liar.host}/{project.namespace}/{SQLITE}:{DH_VERSION}", check=False)
    assert done.returncode == 1, done.stdout + done.stderr
    assert liar.lied


def test_a_4_mib_nested_answer_is_exit_1_with_a_one_line_reason(hostile, liar):
    project, _ = hostile
    liar.answer(rf"{path_of(project, SQLITE)}/manifests/{DH_VERSION}$", 200, nested_json(),
                {"Content-Type": "application/vnd.docker.distribution.manifest.v2+json"})
    started = time.monotonic()
    done = project.inv("verify", f"{liar.host}/{project.namespace}/{SQLITE}:{DH_VERSION}", check=False)
    elapsed = time.monotonic() - started
    assert done.returncode == 1, done.stdout + done.stderr
    assert "nested deeper than" in done.stderr
    print(f"verify of a 4 MiB nested answer: exit 1 in {elapsed:.2f} s (the whole inv process)")
    assert elapsed < 20  # a bound against a hang, not a timing test: the figure is printed above


def test_a_stalled_registry_is_a_timeout_not_a_hang(hostile, liar):
    project, _ = hostile
    liar.stall(rf"{path_of(project, SQLITE)}/manifests/{DH_VERSION}$", 8)
    done = project.inv("verify", f"{liar.host}/{project.namespace}/{SQLITE}:{DH_VERSION}", check=False,
                       env={"FACTORY_REGISTRY_TIMEOUT_S": "2"})
    assert done.returncode == 1, done.stdout + done.stderr
    assert "timed out" in done.stderr


def test_unbundle_push_to_a_lying_mirror_fails_naming_it_and_signs_nothing_new(hostile, liar, tmp_path):
    project, _ = hostile
    bundle = tmp_path / "family.bundle"
    project.inv("bundle", "-c", "datahub-sqlite", "-o", str(bundle), env=ENV)
    before = proofs(real_tags(liar, project, SQLITE))
    liar.header_digest(rf"{path_of(project, SQLITE)}/manifests/", FAKE_DIGEST)
    done = project.inv("unbundle", str(bundle), "--push", liar.host, env=ENV, check=False)
    assert done.returncode == 1, done.stdout[-3000:]
    assert f"{liar.host} names the digest" in done.stdout + done.stderr
    assert proofs(real_tags(liar, project, SQLITE)) == before


def test_cache_from_through_a_liar_warns_and_builds(hostile, liar, docker_api):
    """Last: it empties the engine of the family. A cache lookup the registry lies to is a warning."""
    from scratch_project import remove_namespace_images, remove_tags_under

    project, _ = hostile
    remove_tags_under(docker_api, f"{liar.host}/{project.namespace}")
    remove_namespace_images(docker_api, project.namespace)
    liar.header_digest(r"/manifests/inputs-", FAKE_DIGEST)
    done = project.inv("build-connectors", "-c", "datahub-sqlite", "--cache-from", liar.host, check=False)
    assert done.returncode == 0, done.stdout[-3000:]
    assert {image["result"] for image in project.report().values()} == {"built"}
    assert f"{liar.host} names the digest" in done.stdout + done.stderr
    assert liar.lied

