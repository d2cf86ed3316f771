"""Platforms (issue 12): parsing, per-platform plans, tags and hashes, the manifest list, exit codes."""

import dataclasses
import hashlib
import json

import pytest
from fake_engine import FakeEngine
from project_tree import add_connector, connector_lock
from test_exit_codes import exit_code
from test_plan import PYTHON_ID

from ingestion_factory import platforms
from ingestion_factory import settings as settings_mod
from ingestion_factory.errors import ConfigError
from ingestion_factory.model import catalog
from ingestion_factory.model.plan import (
    BLOCKED,
    CHANGED,
    LABEL_INPUTS,
    LABEL_PARENT,
    MISSING,
    UP_TO_DATE,
    ImageInfo,
    input_hash,
    install_mode,
    make_plan,
    require_buildable,
    require_verified,
)
from ingestion_factory.platforms import AMD64, ARM64
from ingestion_factory.workflows import manifest_list, push

ARM_PYTHON_ID = "sha256:" + "a" * 64


def setup(project, **overrides):
    data = {**settings_mod.pyproject_defaults(project), **overrides}
    settings = settings_mod.load(data, project)
    return settings, catalog.discover(settings)


@pytest.mark.parametrize("text, expected", [
    ("linux/amd64", AMD64), ("amd64", AMD64), ("x86_64", AMD64),
    ("linux/arm64", ARM64), ("linux/arm64/v8", ARM64), ("aarch64", ARM64), (" ARM64 ", ARM64),
])
def test_platform_names_people_type(text, expected):
    assert platforms.parse(text) is expected


def test_parse_all_keeps_order_drops_repeats_and_splits_commas():
    assert platforms.parse_all(["linux/arm64", "amd64,linux/arm64"]) == (ARM64, AMD64)
    assert platforms.parse_all("linux/amd64,linux/arm64") == (AMD64, ARM64)


@pytest.mark.parametrize("bad", [["linux/s390x"], ["windows/amd64"], [], [""]])
def test_unknown_or_no_platform_is_bad_input_exit_2(bad):
    with pytest.raises(ConfigError) as error:
        platforms.parse_all(bad)
    assert exit_code(error.value) == 2


def test_tags_and_refs_of_each_platform():
    assert AMD64.tag("1.7.0.17") == "1.7.0.17" and AMD64.ref("ns/img:1.0") == "ns/img:1.0"
    assert ARM64.tag("1.7.0.17") == "1.7.0.17-arm64"
    assert ARM64.ref("python:3.11-slim-bookworm") == "python:3.11-slim-bookworm-arm64"
    assert ARM64.ref("host:5000/python") == "host:5000/python:latest-arm64"
    assert ARM64.wheel_platform("x86_64-manylinux_2_36") == "aarch64-manylinux_2_36"
    assert ARM64.index_entry() == {"architecture": "arm64", "os": "linux", "variant": "v8"}


def test_settings_default_to_amd64_and_validate_platforms(project):
    settings, _ = setup(project)
    assert settings.target_platforms == (AMD64,)
    settings, _ = setup(project, platforms="linux/amd64,aarch64")  # as INVOKE_FACTORY_PLATFORMS gives it
    assert settings.platforms == ("linux/amd64", "linux/arm64")
    with pytest.raises(ConfigError):
        setup(project, platforms=["linux/mips"])
    with pytest.raises(ConfigError, match="foreign_install"):
        setup(project, foreign_install="sometimes")


def test_missing_binfmt_is_a_clear_exit_2(tmp_path, monkeypatch):
    monkeypatch.setattr(platforms, "host", lambda: AMD64)
    with pytest.raises(ConfigError) as error:
        platforms.require_emulation([AMD64, ARM64], binfmt_dir=tmp_path)
    assert error.value.message.startswith("binfmt for aarch64 is not registered")
    assert "qemu-user-static binfmt-support" in error.value.hint
    assert exit_code(error.value) == 2
    (tmp_path / "qemu-aarch64").write_text("disabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\n")
    assert "disabled" in platforms.emulation_problem(ARM64, tmp_path)
    (tmp_path / "qemu-aarch64").write_text("enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\n")
    platforms.require_emulation([ARM64], binfmt_dir=tmp_path)  # registered: no error
    platforms.require_emulation([AMD64], binfmt_dir=tmp_path / "none")  # the host's own platform needs nothing


def arm_store(settings):
    return FakeEngine.holding({settings.python_image: ImageInfo(PYTHON_ID, {}, 1),
                      ARM64.ref(settings.python_image): ImageInfo(ARM_PYTHON_ID, {}, 1, architecture="arm64")})


def test_arm64_plan_has_its_own_refs_tags_python_image_and_hashes(project):
    add_connector(project, "mysql")
    settings, found = setup(project)
    store = arm_store(settings)
    amd = make_plan(found, ["mysql"], store, settings, revision="abc123")
    arm = make_plan(found, ["mysql"], store, settings, revision="abc123", platform=ARM64)
    version = settings.framework_named("openmetadata").version
    assert [i.ref for i in amd] == [f"openmetadata/ingestion-connector-base:{version}",
                                    f"openmetadata/ingestion-connector-mysql:{version}"]
    assert [i.ref for i in arm] == [f"openmetadata/ingestion-connector-base:{version}-arm64",
                                    f"openmetadata/ingestion-connector-mysql:{version}-arm64"]
    assert arm.items["base"].tags == [f"{version}-arm64", "abc123-arm64", "latest-arm64"]
    assert amd.items["base"].tags == [version, "abc123", "latest"]
    assert arm.python_image == "python:3.11-slim-bookworm-arm64" and arm.python_id == ARM_PYTHON_ID
    assert arm.build_python_id == PYTHON_ID
    assert {i.platform for i in arm} == {ARM64} and {i.state for i in arm} == {MISSING}
    base = found["base"]
    # The same inputs on another platform (or installed another way) are another image.
    assert input_hash(base, PYTHON_ID, settings) != input_hash(base, PYTHON_ID, settings, ARM64)
    assert input_hash(base, PYTHON_ID, settings, ARM64, "cross", PYTHON_ID) != \
        input_hash(base, PYTHON_ID, settings, ARM64, "target", PYTHON_ID)


def test_amd64_hashes_are_what_they_were_before_platforms(project):
    settings, found = setup(project)
    base = found["base"]
    assert input_hash(base, PYTHON_ID, settings) == input_hash(base, PYTHON_ID, settings, AMD64, "target", "x")


def test_an_up_to_date_arm64_image_is_skipped_and_a_wrong_architecture_is_rebuilt(project):
    settings, found = setup(project)
    store = arm_store(settings)
    base = found["base"]
    ref = f"openmetadata/ingestion-connector-base:{base.framework.version}-arm64"
    install = install_mode(base, settings, ARM64)
    labels = {LABEL_INPUTS: input_hash(base, ARM_PYTHON_ID, settings, ARM64, install, PYTHON_ID),
              LABEL_PARENT: ARM_PYTHON_ID}
    store.hold(ref, ImageInfo("sha256:" + "b" * 64, labels, 1, architecture="arm64"))
    assert make_plan(found, ["base"], store, settings, platform=ARM64).items["base"].state == UP_TO_DATE
    store.hold(ref, ImageInfo("sha256:" + "b" * 64, labels, 1, architecture="amd64"))
    item = make_plan(found, ["base"], store, settings, platform=ARM64).items["base"]
    assert item.state == CHANGED and "amd64 image, not arm64" in item.reason


def test_without_the_arm64_python_image_the_plan_names_the_command(project):
    settings, found = setup(project)
    plan = make_plan(found, ["base"], FakeEngine.holding({settings.python_image: ImageInfo(PYTHON_ID, {}, 1)}), settings,
                     platform=ARM64)
    assert plan.items["base"].state == BLOCKED
    with pytest.raises(ConfigError) as error:
        require_buildable(plan)
    assert "inv python-image --platform linux/arm64" in error.value.hint
    assert exit_code(error.value) == 2


def test_a_cross_installed_child_of_a_parent_to_build_is_blocked_without_the_build_platforms_python_image(
        project, monkeypatch):
    """Its parent being built does not make the missing image appear: blocked now, not failed inside BuildKit."""
    monkeypatch.setattr(platforms, "host", lambda: AMD64)
    directory = add_connector(project, "wheels")
    connector_lock(directory).write_text("# inputs: x\n# aarch64-built-from-source: none (a wheel for every "
                                         "package)\npymysql==1.1.0 \\\n    --hash=sha256:00\n")
    settings, found = setup(project)
    store = FakeEngine.holding({ARM64.ref(settings.python_image): ImageInfo(ARM_PYTHON_ID, {}, 1, architecture="arm64")})
    plan = make_plan(found, ["wheels"], store, settings, platform=ARM64)
    assert plan.items["base"].state == MISSING and plan.items["base"].install == "target"  # it will be built
    wheels = plan.items["wheels"]
    assert wheels.install == "cross"
    assert wheels.state == BLOCKED and wheels.reason == f"Python image {settings.python_image} is missing"
    with pytest.raises(ConfigError) as refused:
        require_buildable(plan)
    assert "cross-installing needs the build platform's Python image" in refused.value.message


def test_install_mode_cross_when_every_package_has_a_wheel(project, monkeypatch):
    monkeypatch.setattr(platforms, "host", lambda: AMD64)
    directory = add_connector(project, "wheels")
    connector_lock(directory).write_text("# inputs: x\n# aarch64-built-from-source: none (a wheel for every "
                                                 "package)\npymysql==1.1.0 \\\n    --hash=sha256:00\n")
    sdist = add_connector(project, "sdist")
    connector_lock(sdist).write_text("# inputs: x\n# aarch64-built-from-source: pyodbc\n")
    add_connector(project, "compiles", "x\n", 'build_packages = ["gcc"]\n')
    settings, found = setup(project)
    assert install_mode(found["wheels"], settings, ARM64) == "cross"
    assert install_mode(found["sdist"], settings, ARM64) == "target"  # emulated: an arm64 build of pyodbc
    assert install_mode(found["compiles"], settings, ARM64) == "target"
    assert install_mode(found["wheels"], settings, AMD64) == "target"
    emulated, _ = setup(project, foreign_install="emulated")
    assert install_mode(found["wheels"], emulated, ARM64) == "target"
    forced, _ = setup(project, foreign_install="cross")
    assert install_mode(found["sdist"], forced, ARM64) == "cross"


def test_install_mode_of_a_spec_without_a_lock_is_target(project, monkeypatch):
    # found by mypy: a spec made by hand (not by discover) may have no lock, and `auto` read its header
    monkeypatch.setattr(platforms, "host", lambda: AMD64)
    add_connector(project, "nolock")
    settings, found = setup(project)
    spec = dataclasses.replace(found["nolock"], lock=None)
    assert install_mode(spec, settings, ARM64) == "target"  # was AttributeError: 'NoneType' has no read_text


def test_unavailable_platforms_in_connector_toml_and_inherited(project):
    add_connector(project, "odbc", "x\n", '[unavailable_platforms]\n"arm64" = "no aarch64 driver"\n')
    add_connector(project, "child", "y\n", 'parent = "odbc"\n')
    settings, found = setup(project)
    assert found["odbc"].unavailable_platforms == (("linux/arm64", "no aarch64 driver"),)
    assert found.unavailable_on(found["odbc"], ARM64) == "no aarch64 driver"
    assert found.unavailable_on(found["child"], ARM64) == "parent odbc: no aarch64 driver"
    assert found.unavailable_on(found["odbc"], AMD64) == ""
    from ingestion_factory.model.plan import platform_targets

    usable, skipped = platform_targets(found, ["base", "odbc", "child"], ARM64, settings)
    assert usable == ["base"] and [(r.name, r.status, r.platform) for r in skipped] == [
        ("odbc", "unavailable", "linux/arm64"), ("child", "unavailable", "linux/arm64")]


def test_a_bad_unavailable_platforms_table_breaks_only_that_connector(project):
    add_connector(project, "bad", "x\n", '[unavailable_platforms]\n"linux/sparc" = "why"\n')
    _, found = setup(project)
    assert "unknown platform" in found.broken["bad"].message


def test_manifest_list_document_and_read_back_check():
    entries = [manifest_list.Entry(AMD64, "sha256:" + "1" * 64, 1000),
               manifest_list.Entry(ARM64, "sha256:" + "2" * 64, 1001)]
    body = manifest_list.index_document(entries)
    document = json.loads(body)
    assert document["mediaType"] == manifest_list.LIST_TYPE and document["schemaVersion"] == 2
    assert [m["platform"] for m in document["manifests"]] == [
        {"architecture": "amd64", "os": "linux"}, {"architecture": "arm64", "os": "linux", "variant": "v8"}]
    assert document["manifests"][1] == {"mediaType": manifest_list.IMAGE_TYPE, "size": 1001,
                                        "digest": "sha256:" + "2" * 64, "platform": ARM64.index_entry()}
    expected = {"linux/amd64": "sha256:" + "1" * 64, "linux/arm64": "sha256:" + "2" * 64}
    assert manifest_list.check_read_back(document, manifest_list.LIST_TYPE, expected) is None
    wrong = {**expected, "linux/arm64": "sha256:" + "3" * 64}
    assert "linux/arm64 is sha256:2" in manifest_list.check_read_back(document, manifest_list.LIST_TYPE, wrong)
    assert "not a manifest list" in manifest_list.check_read_back(document, manifest_list.IMAGE_TYPE, expected)
    assert "also names linux/arm64" in manifest_list.check_read_back(
        document, manifest_list.LIST_TYPE, {"linux/amd64": expected["linux/amd64"]})


def test_plain_tags_of_a_manifest_list(project):
    add_connector(project, "mysql")
    settings, found = setup(project)
    store = arm_store(settings)
    plans = [make_plan(found, ["mysql"], store, settings, revision="abc", platform=p) for p in (AMD64, ARM64)]
    grouped = manifest_list.group(plans)
    assert [i.platform for i in grouped["mysql"]] == [AMD64, ARM64]
    version = found["mysql"].framework.version
    assert manifest_list.plain_tags(grouped["mysql"]) == [version, "abc", "latest"]
    assert manifest_list.plain_tags(grouped["mysql"][1:]) == [version, "abc", "latest"]
    with pytest.raises(Exception) as refused:  # missing images are never pushed
        require_verified([item for plan in plans for item in plan])
    assert "on linux/arm64" in refused.value.message and "--platform linux/arm64" in refused.value.hint


class FakeRegistry:
    """Manifests by digest and tag; put_manifest stores what it is given (or, corrupt=True, something else)."""

    def __init__(self, corrupt=False):
        self.by_ref = {}
        self.blobs = {}
        self.corrupt = corrupt

    def manifest(self, repository, reference):
        return self.by_ref.get(reference)

    def blob(self, repository, digest):
        return self.blobs.get(digest)

    def holds_image(self, tag, platform, number=0):
        """`tag` names a single-platform image (as a plain `docker push` leaves it); returns its digest."""
        from ingestion_factory.engine.registry import Manifest

        config = json.dumps({"os": platform.os, "architecture": platform.architecture}).encode()
        config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
        self.blobs[config_digest] = config
        digest = "sha256:" + hashlib.sha256(b"image %d" % number).hexdigest()
        self.by_ref[tag] = self.by_ref[digest] = Manifest(digest, manifest_list.IMAGE_TYPE, config_digest, 700 + number)
        return digest

    def put_manifest(self, repository, tag, body, media_type):
        from ingestion_factory.engine.registry import Manifest

        document = json.loads(body)
        if self.corrupt:
            document["manifests"] = document["manifests"][:1]
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        self.by_ref[tag] = self.by_ref[digest] = Manifest(digest, media_type, None, len(body), document)
        return digest


class FakePusher:
    delays, sleep = (), staticmethod(lambda s: None)

    def __init__(self, client):
        self.client = client
        self.pushed = []

    def push_tag(self, image_id, repository, tag):
        from ingestion_factory.engine.registry import Manifest
        from ingestion_factory.workflows.push import PUSHED, TagResult

        digest = "sha256:" + hashlib.sha256(image_id.encode()).hexdigest()
        self.client.by_ref[digest] = Manifest(digest, manifest_list.IMAGE_TYPE, image_id, 500 + len(self.pushed))
        self.pushed.append(tag)
        return TagResult(name=tag, ref=f"{repository}:{tag}", status=PUSHED, digest=digest)

    def _manifest_or_none(self, repository, tag):
        return self.client.by_ref.get(tag)

    def redact(self, text):
        return text

    def say(self, text):
        pass

    fail = say


def variants(project):
    add_connector(project, "mysql")
    settings, found = setup(project)
    store = arm_store(settings)
    plans = [make_plan(found, ["mysql"], store, settings, revision="abc", platform=p) for p in (AMD64, ARM64)]
    items = manifest_list.group(plans)["mysql"]
    for number, item in enumerate(items):
        item.current = ImageInfo(f"sha256:{number}" + "c" * 63, {}, 1)
        item.input_hash = "sha256:" + "d" * 64
    return items


def test_index_pusher_pushes_each_variant_then_one_list_per_tag(project):
    client = FakeRegistry()
    pusher = FakePusher(client)
    items = variants(project)
    tags = manifest_list.plain_tags(items)
    result = push.IndexPusher(pusher).push_image(items, "reg/ns/ingestion-connector-mysql", tags)
    version = items[0].spec.framework.version
    assert pusher.pushed[:2] == [f"{version}-amd64", f"{version}-arm64"]
    assert pusher.pushed[2].startswith("inputs-")  # the default platform's cache tag, as a plain push gives it
    assert result.status == "pushed" and result.tags == tags
    assert set(result.platforms) == {"linux/amd64", "linux/arm64"}
    stored = client.by_ref[version]
    assert result.digest == stored.digest
    assert manifest_list.platform_digests(stored.document) == result.platforms
    assert [m["size"] for m in stored.document["manifests"]] == [500, 501]
    again = push.IndexPusher(pusher).push_image(items, "reg/ns/ingestion-connector-mysql", tags)
    assert [t.status for t in again.tag_results[2:5]] == ["already present"] * 3


def test_a_list_read_back_without_a_platform_fails_the_image(project):
    items = variants(project)
    pusher = FakePusher(FakeRegistry(corrupt=True))
    result = push.IndexPusher(pusher).push_image(items, "reg/ns/img", manifest_list.plain_tags(items))
    assert result.status == "failed"
    assert "linux/arm64 is missing" in result.detail
    assert [t.status for t in result.tag_results[3:]] == ["not pushed", "not pushed"]


# --- a push of some platforms keeps the others' entries under the shared tags (issue 30, bug 1) -----------


def test_an_arm64_only_push_keeps_the_amd64_image_a_plain_push_left_under_the_tags(project):
    items = variants(project)
    client = FakeRegistry()
    version = items[0].spec.framework.version
    amd64 = {tag: client.holds_image(tag, AMD64) for tag in (version, "latest")}  # no commit tag yet
    pusher = FakePusher(client)
    tags = manifest_list.plain_tags(items[1:])
    result = push.IndexPusher(pusher, covers=["linux/arm64"]).push_image(items[1:], "reg/ns/img", tags)
    assert result.status == "pushed"
    for tag in (version, "latest"):
        stored = manifest_list.platform_digests(client.by_ref[tag].document)
        assert stored == {"linux/arm64": result.platforms["linux/arm64"], "linux/amd64": amd64[tag]}
    # The commit tag held nothing: only what this push brought.
    assert manifest_list.platform_digests(client.by_ref["abc"].document) == result.platforms
    lists = {t.tag: t for t in result.tag_results if t.tag in tags}
    assert lists[version].kept == {"linux/amd64": amd64[version]} and lists["abc"].kept == {}
    assert "kept linux/amd64" in result.detail
    entry = client.by_ref[version].document["manifests"][1]
    assert entry == {"mediaType": manifest_list.IMAGE_TYPE, "size": 700, "digest": amd64[version],
                     "platform": AMD64.index_entry()}
    # Pushed again: nothing changes, and the amd64 entry is still kept.
    again = push.IndexPusher(pusher, covers=["linux/arm64"]).push_image(items[1:], "reg/ns/img", tags)
    assert {t.status for t in again.tag_results if t.tag in tags} == {"already present"}
    assert manifest_list.platform_digests(client.by_ref[version].document)["linux/amd64"] == amd64[version]


def test_a_list_keeps_the_entries_of_platforms_this_push_does_not_cover(project):
    items = variants(project)
    client = FakeRegistry()
    pusher = FakePusher(client)
    tags = manifest_list.plain_tags(items)
    both = push.IndexPusher(pusher, covers=["linux/amd64", "linux/arm64"]).push_image(items, "reg/ns/img", tags)
    items[1].current = ImageInfo("sha256:9" + "e" * 63, {}, 1)  # a new arm64 build
    arm64 = push.IndexPusher(pusher, covers=["linux/arm64"]).push_image(items[1:], "reg/ns/img", tags)
    stored = manifest_list.platform_digests(client.by_ref[tags[0]].document)
    assert stored == {"linux/arm64": arm64.platforms["linux/arm64"], "linux/amd64": both.platforms["linux/amd64"]}
    assert stored["linux/arm64"] != both.platforms["linux/arm64"]
    # A push that covers a platform drops its entry when it has no image for it (unavailable there).
    amd64 = push.IndexPusher(pusher, covers=["linux/amd64", "linux/arm64"]).push_image(items[:1], "reg/ns/img",
                                                                                             tags)
    assert manifest_list.platform_digests(client.by_ref[tags[0]].document) == amd64.platforms
    assert amd64.detail == ""


def test_a_kept_entry_the_registry_no_longer_serves_fails_the_tag_instead_of_naming_it(project):
    items = variants(project)
    client = FakeRegistry()
    version = items[0].spec.framework.version
    gone = client.holds_image(version, AMD64)
    del client.by_ref[gone]
    result = push.IndexPusher(FakePusher(client), covers=["linux/arm64"]).push_image(
        items[1:], "reg/ns/img", manifest_list.plain_tags(items[1:]))
    assert result.status == "failed"
    assert f"cannot keep linux/amd64 in the list: the registry does not serve its reg/ns/img@{gone}" in result.detail
    assert client.by_ref[version].media_type == manifest_list.IMAGE_TYPE  # left as it was


def test_list_entries_name_real_platforms_only():
    document = {"manifests": [
        {"digest": "sha256:" + "1" * 64, "size": 10, "mediaType": manifest_list.IMAGE_TYPE,
         "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
        {"digest": "sha256:" + "2" * 64, "size": 11, "platform": {"os": "unknown", "architecture": "unknown"}},
        {"digest": "sha256:" + "3" * 64, "size": 12, "platform": {"os": "linux", "architecture": "s390x"}},
        {"digest": "sha256:" + "4" * 64, "platform": {"os": "linux", "architecture": "amd64"}},  # no size
        "not an entry"]}
    entries = manifest_list.list_entries(document)
    assert [(e.platform.name, e.size) for e in entries] == [("linux/arm64", 10), ("linux/s390x", 12)]
    assert entries[0].platform is ARM64
    assert manifest_list.config_platform(b'{"os": "linux", "architecture": "amd64"}') is AMD64
    assert manifest_list.config_platform(b"[]") is None and manifest_list.config_platform(b"{") is None
