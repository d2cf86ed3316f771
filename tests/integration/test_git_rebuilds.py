"""Rebuilds in a real git checkout leave no old images behind (issue 30, bug 2).

The scratch projects of the other tests are no git repository, so their images never get a commit tag;
in a checkout each image keeps the commit tag of the commit it was built at after a rebuild moved its
version tag, and a push leaves `inputs-<hash>` and the registry's names on it. Here the DataHub base
changes at each of three commits (a comment in its Dockerfile: a new image, BuildKit's cached layers),
so the base and `datahub-sqlite` are rebuilt three times, with a push after the first build.
"""

from __future__ import annotations

import os
import subprocess
import time

from testkit import DH_VERSION

IMAGES = ("base-datahub", "datahub-sqlite")


def git(project, *args: str) -> str:
    env = dict(os.environ, GIT_AUTHOR_NAME="factory test", GIT_AUTHOR_EMAIL="test@example.invalid",
               GIT_COMMITTER_NAME="factory test", GIT_COMMITTER_EMAIL="test@example.invalid")
    return subprocess.run(["git", *args], cwd=project.root, env=env, check=True, capture_output=True,
                          text=True).stdout.strip()


def namespace_images(api, namespace: str) -> dict[str, list[str]]:
    """Image ID -> its tags, for every image holding a tag or digest reference of the namespace (or of a
    push's copy of it)."""
    found = {}
    for image in api.images.list():
        refs = image.tags + (image.attrs.get("RepoDigests") or [])
        if [ref for ref in refs if ref.startswith(namespace + "/") or f"/{namespace}/" in ref]:
            found[image.id] = sorted(image.tags)
    return found


def exists(api, image_id: str) -> bool:
    from docker.errors import NotFound

    try:
        api.api.inspect_image(image_id)
    except NotFound:
        return False
    return True


def test_three_builds_at_three_commits_leave_one_image_per_connector(scratch_project, empty_registry, docker_api):
    project = scratch_project
    git(project, "init", "--quiet")
    git(project, "add", "--all")
    git(project, "commit", "--quiet", "-m", "build 1")
    dockerfile = project.root / "images" / "base" / "Dockerfile"
    timings, earlier = [], set()
    for build in (1, 2, 3):
        if build > 1:
            dockerfile.write_text(dockerfile.read_text() + f"# build {build}\n")
            git(project, "commit", "--quiet", "--all", "-m", f"build {build}")
        started = time.monotonic()
        done = project.inv("build-connectors", "-c", "datahub-sqlite")
        timings.append(round(time.monotonic() - started, 1))
        assert {name: image["result"] for name, image in project.report().items()} == dict.fromkeys(IMAGES, "built")
        revision = git(project, "rev-parse", "--short=12", "HEAD")
        images = namespace_images(docker_api, project.namespace)
        assert len(images) == len(IMAGES), images  # one per connector: nothing of the builds before
        assert not [image_id for image_id in earlier if exists(docker_api, image_id)]  # not even untagged
        earlier |= set(images)
        for name in IMAGES:
            tags = images[docker_api.api.inspect_image(project.ref(name, DH_VERSION))["Id"]]
            assert project.ref(name, revision) in tags
        if build > 1:
            assert f"Removed {len(IMAGES)} replaced image(s)" in done.stdout, done.stdout
        if build == 1:  # the pushed names and inputs- tags of the first images must not keep them either
            project.inv("push", "-c", "datahub-sqlite", "--registry", empty_registry.host)
            assert any(":inputs-" in tag for tags in namespace_images(docker_api, project.namespace).values()
                       for tag in tags)
    print(f"\nthree builds at three commits: {timings} s")
