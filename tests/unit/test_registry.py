"""`inv push` without Docker: stream parsing, retries, credentials, redaction, the registry client, planning."""

import base64
import hashlib
import http.server
import json
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest
from fake_engine import FakeEngine
from testkit import REPO

from ingestion_factory import settings as settings_mod
from ingestion_factory.engine import registry
from ingestion_factory.engine.registry import Credentials, Manifest, Redactor, RegistryClient, RegistryError
from ingestion_factory.errors import ConfigError, FactoryError
from ingestion_factory.model import catalog, names
from ingestion_factory.model.plan import (
    LABEL_INPUTS,
    LABEL_PARENT,
    UP_TO_DATE,
    ImageInfo,
    input_hash,
    make_plan,
    require_verified,
)
from ingestion_factory.progress import Quiet
from ingestion_factory.workflows import push

DIGEST = "sha256:" + "a" * 64
OTHER_DIGEST = "sha256:" + "b" * 64
IMAGE_ID = "sha256:" + "c" * 64
PASSWORD = "pa55-w0rd!"


def pushed_events(digest=DIGEST, tag="1.0"):
    return [
        {"status": "The push refers to repository [127.0.0.1:5000/ns/ingestion-connector-x]"},
        {"status": "Preparing", "progressDetail": {}, "id": "layer1"},
        {"status": "Preparing", "progressDetail": {}, "id": "layer2"},
        {"status": "Pushing", "progressDetail": {"current": 512, "total": 3}, "id": "layer1"},
        {"status": "Pushed", "progressDetail": {}, "id": "layer1"},
        {"status": "Layer already exists", "progressDetail": {}, "id": "layer2"},
        {"status": f"{tag}: digest: {digest} size: 523"},
        {"progressDetail": {}, "aux": {"Tag": tag, "Digest": digest, "Size": 523}},
    ]


# --- the push stream -----------------------------------------------------------------------------


def test_stream_gives_the_digest_and_counts_layers():
    seen = []
    outcome = push.read_push_stream(pushed_events(), on_layer=lambda done, total: seen.append((done, total)))
    assert outcome.digest == DIGEST
    assert outcome.size == 523
    assert (outcome.layers_pushed, outcome.layers_present) == (1, 1)
    assert seen[-1] == (2, 2)


def test_stream_digest_from_status_line_when_no_aux():
    events = [e for e in pushed_events() if "aux" not in e]
    assert push.read_push_stream(events).digest == DIGEST


@pytest.mark.parametrize("message, kind", [
    ("unauthorized: authentication required", push.AUTH),
    ("denied: requested access to the resource is denied", push.AUTH),
    ("no basic auth credentials", push.AUTH),
    ("unknown blob", push.PERMANENT),
    ("manifest invalid: manifest invalid", push.PERMANENT),
    ('Get "http://127.0.0.1:5909/v2/": dial tcp 127.0.0.1:5909: connect: connection refused', push.TRANSIENT),
])
def test_error_events_raise_even_though_the_sdk_does_not(message, kind):
    events = pushed_events()[:3] + [{"errorDetail": {"message": message}, "error": message}] + pushed_events()[3:]
    with pytest.raises(push.PushError) as caught:
        push.read_push_stream(events)
    assert caught.value.message == message
    assert caught.value.kind == kind


def test_error_without_detail_and_stream_without_digest():
    with pytest.raises(push.PushError, match="blob upload unknown"):
        push.read_push_stream([{"error": "blob upload unknown"}])
    with pytest.raises(push.PushError, match="ended without a digest") as caught:
        push.read_push_stream(pushed_events()[:5])
    assert caught.value.kind == push.TRANSIENT


@pytest.mark.parametrize("message, kind", [
    ("received unexpected HTTP status: 503 Service Unavailable", push.TRANSIENT),
    ("received unexpected HTTP status: 502 Bad Gateway", push.TRANSIENT),
    ("toomanyrequests: rate limit", push.TRANSIENT),
    ("read tcp 127.0.0.1:1->127.0.0.1:2: read: connection reset by peer", push.TRANSIENT),
    ("net/http: TLS handshake timeout", push.TRANSIENT),
    ("127.0.0.1:5909 is not reachable: connection refused", push.TRANSIENT),
    ("blob unknown: " + "sha256:" + "5" * 3 + "0" * 61, push.PERMANENT),  # digits in a digest are no status
    ("name unknown: repository name not known to registry", push.PERMANENT),
    ("something nobody expected", push.PERMANENT),
    ("127.0.0.1:5902 refused the credentials of u (from x): unauthorized", push.AUTH),
])
def test_classify(message, kind):
    assert push.classify(message) == kind


# --- retries -------------------------------------------------------------------------------------


def flaky(*messages, value="ok"):
    """An action that fails with each message in turn, then returns value."""
    remaining = list(messages)
    calls = []

    def action():
        calls.append(1)
        if remaining:
            raise push.PushError(remaining.pop(0))
        return value

    return action, calls


def test_transient_errors_are_retried_with_backoff():
    slept, announced = [], []
    action, calls = flaky("connection reset by peer", "503 Service Unavailable")
    value, tries = push.with_retries(action, sleep=slept.append,
                                     on_retry=lambda tries, delay, exc: announced.append((tries, delay)))
    assert (value, tries, len(calls)) == ("ok", 3, 3)
    assert slept == [1.0, 2.0]
    assert announced == [(1, 1.0), (2, 2.0)]


def test_retries_give_up_after_four_tries():
    slept = []
    action, calls = flaky(*["connection refused"] * 10)
    with pytest.raises(push.PushError) as caught:
        push.with_retries(action, sleep=slept.append)
    assert len(calls) == 4 and slept == [1.0, 2.0, 4.0]
    assert caught.value.tries == 4


@pytest.mark.parametrize("message", ["unauthorized: authentication required", "manifest invalid"])
def test_auth_and_permanent_errors_are_not_retried(message):
    slept = []
    action, calls = flaky(message)
    with pytest.raises(push.PushError):
        push.with_retries(action, sleep=slept.append)
    assert len(calls) == 1 and slept == []


# --- credentials and redaction -------------------------------------------------------------------


def test_credentials_never_show_the_password():
    creds = Credentials("user", PASSWORD, source="test")
    assert PASSWORD not in repr(creds)
    assert PASSWORD not in creds.describe()
    assert creds.auth_config("127.0.0.1:5000") == {"username": "user", "password": PASSWORD,
                                                    "serveraddress": "127.0.0.1:5000"}
    assert creds.auth_config("")["serveraddress"] == registry.HUB_AUTH_KEY


def test_redactor_hides_password_and_its_basic_auth_form():
    creds = Credentials("user", PASSWORD, source="test")
    basic = base64.b64encode(f"user:{PASSWORD}".encode()).decode()
    text = f"failed with password {PASSWORD} and header Authorization: Basic {basic}"
    redacted = Redactor(creds.secrets)(text)
    assert PASSWORD not in redacted and basic not in redacted
    assert redacted.count(registry.REDACTED) == 2
    assert Redactor([])("unchanged") == "unchanged"


def test_credentials_from_env_password(tmp_path):
    env = {registry.ENV_USERNAME: "ci", registry.ENV_PASSWORD: PASSWORD}
    creds = registry.read_credentials("r:5000", environ=env, docker_config=False)
    assert (creds.username, creds.password, creds.source) == ("ci", PASSWORD, registry.ENV_PASSWORD)


def test_credentials_from_env_password_file(tmp_path):
    secret = tmp_path / "pw"
    secret.write_text(PASSWORD + "\n")
    env = {registry.ENV_USERNAME: "ci", registry.ENV_PASSWORD_FILE: str(secret)}
    creds = registry.read_credentials("r:5000", environ=env, docker_config=False)
    assert creds.password == PASSWORD  # the trailing newline of the file is not part of it


def test_flags_win_over_env(tmp_path):
    secret = tmp_path / "pw"
    secret.write_text("from-file")
    env = {registry.ENV_USERNAME: "env-user", registry.ENV_PASSWORD: "from-env"}
    creds = registry.read_credentials("r:5000", username="flag-user", password_file=str(secret), environ=env,
                                      docker_config=False)
    assert (creds.username, creds.password, creds.source) == ("flag-user", "from-file", "--password-file")


@pytest.mark.parametrize("env", [{registry.ENV_USERNAME: "u"}, {registry.ENV_PASSWORD: PASSWORD}])
def test_half_a_login_is_an_error(env):
    with pytest.raises(ConfigError, match="lack") as caught:
        registry.read_credentials("r:5000", environ=env, docker_config=False)
    assert PASSWORD not in caught.value.render()


def test_unreadable_and_empty_password_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        registry.read_credentials("r", username="u", password_file=str(tmp_path / "missing"), environ={})
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError, match="empty"):
        registry.read_credentials("r", username="u", password_file=str(tmp_path / "empty"), environ={})


def test_credentials_from_docker_config(tmp_path, monkeypatch):
    auth = base64.b64encode(f"dock:{PASSWORD}".encode()).decode()
    (tmp_path / "config.json").write_text(json.dumps({"auths": {"127.0.0.1:5000": {"auth": auth}}}))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    creds = registry.read_credentials("127.0.0.1:5000", environ={})
    assert (creds.username, creds.password, creds.source) == ("dock", PASSWORD, "Docker config")
    assert registry.read_credentials("127.0.0.1:5001", environ={}) is None


# --- where the registry is -----------------------------------------------------------------------


REGISTRY_CONFIG = {
    "InsecureRegistryCIDRs": ["127.0.0.0/8"],
    "IndexConfigs": {"docker.io": {"Secure": True}, "plain.example:5000": {"Secure": False}},
}


@pytest.mark.parametrize("host, insecure", [
    ("127.0.0.1:5000", True),
    ("127.0.0.1", True),
    ("10.1.2.3:5000", False),
    ("plain.example:5000", True),
    ("", False),
    ("docker.io", False),
])
def test_is_insecure_follows_the_daemon(host, insecure):
    assert registry.is_insecure(host, REGISTRY_CONFIG) is insecure


def test_hub_names():
    assert names.canonical_host("") == names.canonical_host("index.docker.io") == "docker.io"
    assert registry.api_path("", "busybox") == "library/busybox"
    assert registry.api_path("127.0.0.1:5000", "busybox") == "busybox"
    # The daemon names the repository with its host; the HTTP API does not.
    assert registry.api_path("127.0.0.1:5000", "127.0.0.1:5000/ns/img") == "ns/img"
    assert registry.api_path("docker.io", "docker.io/ns/img") == "ns/img"
    assert registry.display_host("") == "Docker Hub (docker.io)"


def test_parse_challenge():
    scheme, params = registry.parse_challenge(
        'Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull"')
    assert scheme == "bearer"
    assert params == {"realm": "https://auth.example/token", "service": "registry.example",
                      "scope": "repository:a/b:pull"}
    assert registry.parse_challenge('Basic realm="test"') == ("basic", {"realm": "test"})


# --- the registry client against a fake HTTP session ---------------------------------------------


@dataclass
class Reply:
    status_code: int
    headers: dict = field(default_factory=dict)
    body: dict | None = None
    raw: bytes | None = None  # the body as sent, when it is no JSON document of ours
    read: int = 0  # bytes the client took of the body
    closed: bool = False

    @property
    def content(self):
        return self.raw if self.raw is not None else json.dumps(self.body or {}).encode()

    def iter_content(self, chunk_size=1):
        data = self.content
        for start in range(0, len(data), chunk_size):
            self.read = start + chunk_size
            yield data[start:start + chunk_size]

    def close(self):
        self.closed = True


class FakeSession:
    """Answers like a registry: `routes` maps (method, url) to a function of the headers."""

    def __init__(self, routes, refuse=()):
        self.routes = routes
        self.refuse = refuse
        self.calls = []

    def request(self, method, url, headers=None, **kwargs):
        self.calls.append((method, url, dict(headers or {})))
        if any(url.startswith(prefix) for prefix in self.refuse):
            raise ConnectionError(f"HTTPConnectionPool: Max retries exceeded ({PASSWORD}): [Errno 111] "
                                  "Connection refused")
        return self.routes[(method, url)](headers or {})

    def get(self, url, params=None, auth=None, **kwargs):
        self.calls.append(("GET", url, {"auth": auth, "params": params}))
        return self.routes[("TOKEN", url)](auth)


def basic_protected(reply):
    expected = "Basic " + base64.b64encode(f"user:{PASSWORD}".encode()).decode()

    def route(headers):
        if headers.get("Authorization") != expected:
            return Reply(401, {"WWW-Authenticate": 'Basic realm="test"'})
        return reply

    return route


MANIFEST_URL = "http://127.0.0.1:5000/v2/ns/img/manifests/1.0"


def manifest_reply(digest=None, config=IMAGE_ID):
    """A manifest naming `config`; its Docker-Content-Digest header is the body's own, unless `digest` lies."""
    reply = Reply(200, {"Content-Type": "application/vnd.docker.distribution.manifest.v2+json"},
                  {"schemaVersion": 2, "config": {"digest": config}})
    reply.headers["Docker-Content-Digest"] = digest or sha256_digest(reply.content)
    return reply


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


MANIFEST_DIGEST = manifest_reply().headers["Docker-Content-Digest"]


def test_client_falls_back_to_http_for_insecure_registries_and_answers_basic_auth():
    session = FakeSession({
        ("GET", "http://127.0.0.1:5000/v2/"): basic_protected(Reply(200)),
        ("GET", MANIFEST_URL): basic_protected(manifest_reply()),
    }, refuse=("https://",))
    client = RegistryClient("127.0.0.1:5000", Credentials("user", PASSWORD, source="t"), insecure=True,
                            session=session)
    client.ping()
    manifest = client.manifest("127.0.0.1:5000/ns/img", "1.0")  # as the daemon names it
    assert manifest == Manifest(MANIFEST_DIGEST, "application/vnd.docker.distribution.manifest.v2+json", IMAGE_ID)
    assert "application/vnd.oci.image.manifest.v1+json" in session.calls[-1][2]["Accept"]


def test_client_wrong_password_is_unauthorized_without_the_secret():
    session = FakeSession({("GET", "http://127.0.0.1:5000/v2/"): basic_protected(Reply(200))}, refuse=("https://",))
    client = RegistryClient("127.0.0.1:5000", Credentials("user", "wrong-" + PASSWORD, source="env"), insecure=True,
                            session=session)
    with pytest.raises(RegistryError, match="refused the credentials of user") as caught:
        client.ping()
    assert PASSWORD not in caught.value.render()
    assert push.classify(caught.value.message) == push.AUTH


def test_client_without_login_on_a_protected_registry():
    session = FakeSession({("GET", "http://127.0.0.1:5000/v2/"): basic_protected(Reply(200))}, refuse=("https://",))
    with pytest.raises(RegistryError, match="requires a login"):
        RegistryClient("127.0.0.1:5000", None, insecure=True, session=session).ping()


def test_client_bearer_token_flow():
    realm = "https://auth.example/token"
    challenge = f'Bearer realm="{realm}",service="registry.example"'
    url = "https://registry.example/v2/ns/img/manifests/1.0"

    def route(headers):
        if headers.get("Authorization") != "Bearer t0ken":
            return Reply(401, {"WWW-Authenticate": challenge})
        return manifest_reply()

    session = FakeSession({("GET", url): route, ("TOKEN", realm): lambda auth: Reply(200, body={"token": "t0ken"})})
    client = RegistryClient("registry.example", Credentials("user", PASSWORD, source="t"), session=session)
    assert client.manifest("ns/img", "1.0").digest == MANIFEST_DIGEST
    token_call = next(call for call in session.calls if call[1] == realm)
    assert token_call[2]["params"] == {"service": "registry.example", "scope": "repository:ns/img:pull"}
    assert token_call[2]["auth"] == ("user", PASSWORD)


def test_client_missing_tag_and_unreachable_registry():
    session = FakeSession({("GET", MANIFEST_URL): lambda headers: Reply(404)}, refuse=("https://",))
    client = RegistryClient("127.0.0.1:5000", None, insecure=True, session=session)
    assert client.manifest("ns/img", "1.0") is None
    down = RegistryClient("127.0.0.1:5000", Credentials("user", PASSWORD, source="t"), insecure=True,
                          session=FakeSession({}, refuse=("https://", "http://")))
    with pytest.raises(RegistryError, match="127.0.0.1:5000 is not reachable: connection refused") as caught:
        down.ping()
    assert PASSWORD not in caught.value.render()
    assert push.classify(caught.value.message) == push.TRANSIENT


def test_manifest_digest_computed_when_the_header_is_missing():
    reply = manifest_reply()
    del reply.headers["Docker-Content-Digest"]
    session = FakeSession({("GET", MANIFEST_URL): lambda headers: reply}, refuse=("https://",))
    manifest = RegistryClient("127.0.0.1:5000", None, insecure=True, session=session).manifest("ns/img", "1.0")
    import hashlib

    assert manifest.digest == "sha256:" + hashlib.sha256(reply.content).hexdigest()


# --- the pusher against a fake daemon and a fake registry ----------------------------------------


class FakeRegistry:
    registry = "127.0.0.1:5000"

    def __init__(self, before=None, after=DIGEST, held=None):
        self.before, self.after, self.reads = before, after, 0
        # What a read by digest finds: by default the manifest the tag named before the push.
        self.held = {before.digest: before} if held is None and before else dict(held or {})

    def manifest(self, repository, tag):
        if tag.startswith("sha256:"):
            return self.held.get(tag)
        self.reads += 1
        if self.reads == 1:
            return self.before
        return Manifest(self.after, "x", IMAGE_ID) if self.after else None

    def blob(self, repository, digest):
        return b"{}"


def pusher(streams, fake_registry, credentials=None):
    creds = credentials or Credentials("user", PASSWORD, source="t")
    engine = FakeEngine()
    engine.add(IMAGE_ID)
    engine.push_streams = list(streams)
    return push.Pusher(engine, fake_registry, creds, redact=Redactor(creds.secrets),
                       progress=Quiet(), sleep=lambda s: None)


def test_push_tag_pushes_then_reads_back():
    p = pusher([pushed_events()], FakeRegistry())
    result = p.push_tag(IMAGE_ID, "127.0.0.1:5000/ns/img", "1.0")
    assert (result.status, result.digest, result.tries) == (push.PUSHED, DIGEST, 1)
    assert p.engine.tagged == ["127.0.0.1:5000/ns/img:1.0"] and p.engine.tags_of(IMAGE_ID) == p.engine.tagged
    assert p.engine.pushed[0][1]["password"] == PASSWORD  # handed to the daemon, never printed


def test_same_image_already_there_is_a_no_op():
    p = pusher([], FakeRegistry(before=Manifest(DIGEST, "x", IMAGE_ID)))
    result = p.push_tag(IMAGE_ID, "127.0.0.1:5000/ns/img", "1.0")
    assert (result.status, result.digest) == (push.PRESENT, DIGEST)
    assert p.engine.pushed == []


def test_a_manifest_the_registry_does_not_hold_by_its_digest_is_not_taken_as_present():
    # A liar answers the tag with a body naming our image ID that it does not store: nothing is signed for it.
    made_up = Manifest(OTHER_DIGEST, "x", IMAGE_ID)
    p = pusher([pushed_events()], FakeRegistry(before=made_up, held={}))
    result = p.push_tag(IMAGE_ID, "127.0.0.1:5000/ns/img", "1.0")
    assert (result.status, result.digest) == (push.PUSHED, DIGEST)
    assert len(p.engine.pushed) == 1


def test_other_image_under_the_tag_is_replaced():
    p = pusher([pushed_events()], FakeRegistry(before=Manifest(OTHER_DIGEST, "x", "sha256:" + "d" * 64)))
    assert p.push_tag(IMAGE_ID, "127.0.0.1:5000/ns/img", "1.0").status == push.PUSHED


def test_read_back_mismatch_fails():
    result = pusher([pushed_events()], FakeRegistry(after=OTHER_DIGEST)).push_tag(IMAGE_ID, "r/ns/img", "1.0")
    assert result.status == push.FAILED
    assert OTHER_DIGEST in result.detail and DIGEST in result.detail


def test_transient_stream_error_is_retried():
    refused = [{"errorDetail": {"message": "connection reset by peer"}, "error": "connection reset by peer"}]
    result = pusher([refused, pushed_events()], FakeRegistry()).push_tag(IMAGE_ID, "r/ns/img", "1.0")
    assert (result.status, result.tries) == (push.PUSHED, 2)


def test_auth_error_is_not_retried_and_stops_the_run():
    denied = [{"errorDetail": {"message": "unauthorized: authentication required"},
               "error": "unauthorized: authentication required"}]
    p = pusher([denied], FakeRegistry())
    item = fake_item()
    result = p.push_image(item, "r/ns/img", ["1.0", "abc", "latest"])
    assert result.status == push.FAILED
    assert [t.status for t in result.tag_results] == [push.FAILED, push.NOT_PUSHED, push.NOT_PUSHED]
    assert len(p.engine.pushed) == 1
    assert push.stops_the_run(result)


def test_exception_text_is_redacted():
    leak = RuntimeError(f"500 Server Error for http+docker://localhost (auth={PASSWORD})")
    result = pusher([leak] * 4, FakeRegistry()).push_tag(IMAGE_ID, "r/ns/img", "1.0")
    assert result.status == push.FAILED and result.tries == 4
    assert PASSWORD not in result.detail and registry.REDACTED in result.detail


def fake_item():
    @dataclass
    class Item:
        name: str = "x"
        ref: str = "ns/img:1.0"
        current: ImageInfo = ImageInfo(IMAGE_ID, {}, 1)

    return Item()


# --- what may be pushed, and under which tags ----------------------------------------------------


PYTHON_ID = "sha256:" + "1" * 64


def add_connector(project, name, fragment="pymysql>=1.1\n"):
    # Not imported from tests/conftest.py: a bare `import conftest` can resolve to
    # tests/integration/conftest.py when both directories are collected in one run.
    directory = project / "images" / "connectors" / name
    directory.mkdir(parents=True)
    (directory / "requirements.txt").write_text(fragment)


def plan_with(project, built=(), tag=""):
    settings = settings_mod.load(settings_mod.pyproject_defaults(project), project).with_overrides(tag=tag or None)
    found = catalog.discover(settings)
    store = FakeEngine.holding({settings.python_image: ImageInfo(PYTHON_ID, {}, 1)})
    ids = {}
    for name in ["base", "base-datahub", *built]:
        spec = found[name]
        parent_id = PYTHON_ID if spec.parent is None else ids[spec.parent]
        ids[name] = "sha256:" + name.encode().hex().ljust(64, "0")[:64]
        labels = {LABEL_INPUTS: input_hash(spec, parent_id, settings), LABEL_PARENT: parent_id,
                  # Built at this commit: the push must use it, whatever HEAD is now.
                  "org.opencontainers.image.revision": "abcdef123456"}
        store.hold(f"{settings.repository(spec.image_name)}:{settings.tag or spec.framework.version}",
                   ImageInfo(ids[name], labels, 1))
    return settings, found, store


def test_up_to_date_images_may_be_pushed_with_their_build_tags(project):
    add_connector(project, "mysql")
    settings, found, store = plan_with(project, ["mysql"])
    plan = make_plan(found, ["mysql"], store, settings, revision="999999999999-dirty")
    require_verified(plan)
    item = plan.items["mysql"]
    version = settings.frameworks["openmetadata"].version
    assert push.select_tags(item) == [version, "abcdef123456", "latest"]
    assert push.select_tags(item, latest=False) == [version, "abcdef123456"]
    assert names.target_repository(settings, "127.0.0.1:5000", "ingestion-connector-mysql") == \
        "127.0.0.1:5000/openmetadata/ingestion-connector-mysql"
    assert names.target_repository(settings, "", "ingestion-connector-mysql") == \
        "openmetadata/ingestion-connector-mysql"


def test_prerelease_never_gets_latest(project):
    add_connector(project, "mysql")
    settings, found, store = plan_with(project, ["mysql"], tag="2.0.0rc1")
    plan = make_plan(found, ["mysql"], store, settings, revision="abcdef123456")
    assert push.select_tags(plan.items["mysql"], latest=True) == ["2.0.0rc1", "abcdef123456"]


def test_stale_or_missing_images_are_refused_with_the_build_command(project):
    add_connector(project, "mysql")
    add_connector(project, "postgres", "psycopg2-binary\n")
    settings, found, store = plan_with(project, ["mysql"])
    (project / "images" / "connectors" / "mysql" / "requirements.txt").write_text("pymysql>=1.2\n")
    plan = make_plan(found, ["mysql", "postgres"], store, settings, revision="abc")
    assert plan.items["base"].state == UP_TO_DATE
    with pytest.raises(FactoryError) as caught:
        require_verified(plan)
    text = caught.value.render()
    assert "mysql (inputs changed)" in text and "postgres (missing)" in text
    assert "`inv build-connectors -c mysql -c postgres`" in text


def test_stale_base_alone_names_build_base(project):
    settings, found, store = plan_with(project)
    (project / "runtime" / "main.py").write_text("print('changed')\n")
    plan = make_plan(found, ["base-datahub"], store, settings, revision="abc")
    with pytest.raises(FactoryError) as caught:
        require_verified(plan)
    assert "base-datahub (inputs changed)" in caught.value.message
    assert caught.value.hint.startswith("build first: `inv build-base --framework datahub`")


def test_summary_of_an_image_from_its_tags():
    def image(*states):
        tags = [push.TagResult(name=str(i), ref="", status=s,
                               digest=DIGEST if s in (push.PUSHED, push.PRESENT) else "",
                               detail="boom" if s == push.FAILED else "") for i, s in enumerate(states)]
        return push._summarise(push.PushResult(name="x", image="x:1", repository="r/x", status=push.FAILED,
                                               tag_results=tags))

    assert image(push.PRESENT, push.PRESENT).status == push.PRESENT
    assert image(push.PRESENT, push.PUSHED).status == push.PUSHED
    assert image(push.PUSHED, push.FAILED, push.NOT_PUSHED).status == push.FAILED
    assert image(push.PUSHED, push.FAILED).detail == "1: boom"
    assert image(push.PUSHED).digest == DIGEST


# --- credentials stay with their registry --------------------------------------------------------


def test_env_credentials_belong_to_one_registry_host():
    env = {registry.ENV_USERNAME: "ci", registry.ENV_PASSWORD: PASSWORD, registry.ENV_HOST: "home:5000"}
    assert registry.read_credentials("home:5000", environ=env, docker_config=False).host == "home:5000"
    assert registry.read_credentials("cache.example:5000", environ=env, docker_config=False) is None
    # Without FACTORY_REGISTRY_HOST they are for the command's own registry (`home`), not a cache or mirror it names.
    del env[registry.ENV_HOST]
    assert registry.read_credentials("cache.example", environ=env, docker_config=False, home="home:5000") is None
    assert registry.read_credentials("home:5000", environ=env, docker_config=False, home="home:5000").password == PASSWORD


def test_a_client_never_uses_credentials_read_for_another_host():
    client = RegistryClient("cache.example", Credentials("u", PASSWORD, source="env", host="home:5000"),
                            session=FakeSession({}))
    assert client.credentials is None


class _Recorder(http.server.BaseHTTPRequestHandler):
    """A registry or a token service on loopback; `server.answer(handler)` decides, every request is recorded."""

    def do_GET(self):  # noqa: N802 - http.server's naming
        self.server.seen.append((self.path, self.headers.get("Authorization")))
        status, headers, body = self.server.answer(self)
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@contextmanager
def loopback(answer, host="127.0.0.1"):
    server = http.server.ThreadingHTTPServer((host, 0), _Recorder)
    server.seen, server.answer = [], answer
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server, f"{host}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _token_registry(realm: str):
    def answer(handler):
        if handler.headers.get("Authorization") == "Bearer t0ken":
            return 200, {}, b"{}"
        return 401, {"WWW-Authenticate": f'Bearer realm="{realm}",service="test"'}, b"{}"
    return answer


def test_a_token_realm_on_another_host_over_http_never_gets_the_credentials():
    with loopback(lambda handler: (200, {"Content-Type": "application/json"}, b'{"token": "t0ken"}')) as (realm, realm_at), \
            loopback(_token_registry(f"http://localhost:{realm_at.split(':')[1]}/token")) as (_, registry_at):
        client = RegistryClient(registry_at, Credentials("user", PASSWORD, source="env", host=registry_at),
                                insecure=True)
        client.ping()  # the registry takes the anonymous token; our password never left for the realm
    assert realm.seen and all(authorization is None for _, authorization in realm.seen)


def test_the_registrys_own_token_service_gets_the_credentials():
    def answer(handler):
        if handler.path.startswith("/token"):
            return 200, {}, b'{"token": "t0ken"}'
        return registry_answer(handler)

    with loopback(answer) as (server, registry_at):
        registry_answer = _token_registry(f"http://{registry_at}/token")
        RegistryClient(registry_at, Credentials("user", PASSWORD, source="env", host=registry_at), insecure=True).ping()
    basic = "Basic " + base64.b64encode(f"user:{PASSWORD}".encode()).decode()
    assert (next(auth for path, auth in server.seen if path.startswith("/token"))) == basic


@pytest.mark.parametrize("body, says", [(b"<html>oops</html>", "not JSON"), (b'["x"]', "without a token"),
                                        (b'{"token": ""}', "without a token")])
def test_a_broken_token_service_is_one_clear_registry_error(body, says):
    with loopback(lambda handler: (200, {"Content-Type": "text/html"}, body)) as (_, realm_at), \
            loopback(_token_registry(f"http://{realm_at}/token")) as (_, registry_at):
        client = RegistryClient(registry_at, None, insecure=True)
        with pytest.raises(RegistryError, match=says):
            client.ping()


def test_with_a_cache_a_broken_token_service_is_one_warning():
    from ingestion_factory.workflows.cache import RegistryCache

    warnings = []
    with loopback(lambda handler: (200, {}, b"not json")) as (_, realm_at), \
            loopback(_token_registry(f"http://{realm_at}/token")) as (_, registry_at):
        cache = RegistryCache(None, RegistryClient(registry_at, None, insecure=True), lambda name: name,
                              warn=warnings.append)
        assert cache.ping() is False
    assert len(warnings) == 1 and "not JSON" in warnings[0] and "building instead" in warnings[0]


# --- answers too large or too deep: refused as RegistryError, quickly ------------------------------------


DEEP = b"[" * registry.MAX_ANSWER_BYTES  # 4 MiB of nesting: json.loads alone ends in a RecursionError


def serving(url, reply):
    return RegistryClient("127.0.0.1:5000", None, insecure=True,
                          session=FakeSession({("GET", url): lambda headers: reply}, refuse=("https://",)))


def test_a_deeply_nested_manifest_is_a_one_line_registry_error_quickly():
    with loopback(lambda handler: (200, {"Content-Type": "application/vnd.oci.image.manifest.v1+json"}, DEEP)) \
            as (_, registry_at):
        client = RegistryClient(registry_at, None, insecure=True)
        started = time.monotonic()
        with pytest.raises(RegistryError) as refused:
            client.manifest("ns/img", "1.0")
        assert time.monotonic() - started < 2
    assert refused.value.message == f"the manifest of ns/img:1.0 from {registry_at} is nested deeper than 100 levels"
    assert refused.value.exit_code == 1 and "4 MiB" in refused.value.hint
    assert push.classify(refused.value.message) == push.PERMANENT  # not retried: the same answer would come


def test_an_oversize_manifest_is_refused_after_reading_no_more_than_the_limit():
    reply = Reply(200, {"Content-Type": "application/json"}, raw=b'{"pad": "' + b"x" * (8 * 2**20) + b'"}')
    with pytest.raises(RegistryError, match="is larger than 4 MiB, the most that is read of it"):
        serving(MANIFEST_URL, reply).manifest("ns/img", "1.0")
    assert reply.read <= registry.MAX_ANSWER_BYTES + registry.CHUNK and reply.closed
    # An answer of exactly the limit is read.
    fits = b'{"schemaVersion": 2, "pad": "' + b"x" * (registry.MAX_ANSWER_BYTES - 31) + b'"}'
    assert len(fits) == registry.MAX_ANSWER_BYTES
    assert serving(MANIFEST_URL, Reply(200, raw=fits)).manifest("ns/img", "1.0").size == len(fits)


def test_an_oversize_answer_over_http_is_refused_too():
    big = b'{"pad": "' + b"x" * (5 * 2**20) + b'"}'
    with loopback(lambda handler: (200, {}, big)) as (_, registry_at):
        with pytest.raises(RegistryError, match="larger than 4 MiB"):
            RegistryClient(registry_at, None, insecure=True).manifest("ns/img", "1.0")


def test_an_oversize_blob_is_refused():
    url = f"http://127.0.0.1:5000/v2/ns/img/blobs/{DIGEST}"
    reply = Reply(200, raw=b"x" * (registry.MAX_ANSWER_BYTES + 1))
    with pytest.raises(RegistryError, match=f"blob {DIGEST[:19]} of ns/img is larger than 4 MiB"):
        serving(url, reply).blob("ns/img", DIGEST)
    assert reply.closed


def test_a_deeply_nested_token_answer_is_a_registry_error():
    with loopback(lambda handler: (200, {"Content-Type": "application/json"}, DEEP)) as (_, realm_at), \
            loopback(_token_registry(f"http://{realm_at}/token")) as (_, registry_at):
        with pytest.raises(RegistryError, match="token service .* is nested deeper than 100 levels"):
            RegistryClient(registry_at, None, insecure=True).ping()


def test_with_a_cache_a_deeply_nested_answer_is_one_warning_not_an_exception():
    from test_cache import FakeItem

    from ingestion_factory.workflows.cache import RegistryCache

    item = FakeItem()
    tag = names.cache_tag("sha256:" + "ab" * 32)
    warnings = []
    client = serving(f"http://127.0.0.1:5000/v2/ns/img/manifests/{tag}", Reply(200, raw=DEEP))
    cache = RegistryCache(FakeEngine(), client, lambda name: "ns/img", warn=warnings.append)
    started = time.monotonic()
    assert cache.fetch(item, "sha256:" + "ab" * 32, "sha256:" + "d" * 64) is None
    assert time.monotonic() - started < 2
    assert len(warnings) == 1 and "nested deeper than 100 levels" in warnings[0] and "building instead" in warnings[0]


def test_a_deeply_nested_signature_manifest_fails_the_signature_check_not_the_run():
    from ingestion_factory.model import trust_records
    from ingestion_factory.workflows import trust_check

    image = manifest_reply()
    routes = {("GET", "http://127.0.0.1:5000/v2/ns/img/manifests/" + MANIFEST_DIGEST): lambda headers: image,
              ("GET", "http://127.0.0.1:5000/v2/ns/img/manifests/" + trust_records.signature_tag(MANIFEST_DIGEST)):
                  lambda headers: Reply(200, raw=DEEP)}
    client = RegistryClient("127.0.0.1:5000", None, insecure=True, session=FakeSession(routes, refuse=("https://",)))
    verdict = trust_check.check(client, "ns/img", MANIFEST_DIGEST, [], trust_check.Expectation())
    assert verdict.failure.check == trust_check.Check.SIGNATURE and "nested deeper than 100 levels" in verdict.detail


# --- content addressing: a digest is the sha256 of bytes we hold -----------------------------------


def test_a_header_digest_that_is_not_the_body_s_is_an_error_naming_the_registry():
    lying = manifest_reply(digest=OTHER_DIGEST)
    session = FakeSession({("GET", MANIFEST_URL): lambda headers: lying}, refuse=("https://",))
    with pytest.raises(RegistryError, match="127.0.0.1:5000 names the digest") as caught:
        RegistryClient("127.0.0.1:5000", None, insecure=True, session=session).manifest("ns/img", "1.0")
    assert OTHER_DIGEST[:19] in caught.value.message and MANIFEST_DIGEST in caught.value.message


def test_a_manifest_read_by_digest_must_hash_to_it():
    swapped = manifest_reply(config="sha256:" + "e" * 64)  # honest header, but not the body asked for
    url = f"http://127.0.0.1:5000/v2/ns/img/manifests/{MANIFEST_DIGEST}"
    session = FakeSession({("GET", url): lambda headers: swapped}, refuse=("https://",))
    client = RegistryClient("127.0.0.1:5000", None, insecure=True, session=session)
    with pytest.raises(RegistryError, match="not the digest asked for"):
        client.manifest("ns/img", MANIFEST_DIGEST)
    session.routes[("GET", url)] = lambda headers: manifest_reply()
    assert client.manifest("ns/img", MANIFEST_DIGEST).digest == MANIFEST_DIGEST


def test_a_stored_manifest_s_digest_is_the_one_of_the_body_sent():
    body = b'{"schemaVersion": 2}'
    url = "http://127.0.0.1:5000/v2/ns/img/manifests/1.0"
    session = FakeSession({("PUT", url): lambda headers: Reply(201, {"Docker-Content-Digest": OTHER_DIGEST})},
                          refuse=("https://",))
    client = RegistryClient("127.0.0.1:5000", None, insecure=True, session=session)
    with pytest.raises(RegistryError, match="names the digest"):
        client.put_manifest("ns/img", "1.0", body, "application/vnd.oci.image.index.v1+json")
    session.routes[("PUT", url)] = lambda headers: Reply(201)
    assert client.put_manifest("ns/img", "1.0", body, "x") == sha256_digest(body)


def test_the_request_timeout_comes_from_the_environment_within_bounds():
    assert registry.request_timeout({}) == registry.TIMEOUT_S
    assert registry.request_timeout({registry.ENV_TIMEOUT: "2.5"}) == 2.5
    for bad in ("0", "601", "soon", "nan"):
        with pytest.raises(ConfigError, match="no number of seconds"):
            registry.request_timeout({registry.ENV_TIMEOUT: bad})


def test_unbundle_push_stops_after_an_auth_failure_as_push_does(monkeypatch, tmp_path):
    """The mirror push used to try every image after a refused login (about 7 s of retries each)."""
    from ingestion_factory.model import bundle_format
    from ingestion_factory.workflows import bundle

    tried = []

    class RefusingPusher:
        def push_id(self, name, ref, image_id, repository, tags):
            tried.append(name)
            return push.PushResult(name=name, image=ref, repository=repository, status=push.FAILED, tags=tags,
                                   detail="unauthorized: authentication required")

    monkeypatch.setattr(bundle, "connect", lambda *args: RefusingPusher())
    images = tuple(bundle_format.BundledImage(name=name, repository=f"ns/ingestion-connector-{name}", tags=("1.0",),
                                       image_id="sha256:" + str(n) * 64, input_hash="", framework="datahub",
                                       framework_version="1.0", parent=None, parent_id="")
                   for n, name in enumerate(("base", "mysql", "postgres"), start=1))
    manifest = bundle_format.BundleManifest(images=images, archive_size=0, archive_sha256="")
    settings = settings_mod.load({**settings_mod.pyproject_defaults(REPO), "output_dir": str(tmp_path / "out")},
                                 tmp_path)
    run = bundle._push_mirror(settings, None, manifest, "127.0.0.1:5000", None, Quiet())
    assert "3 of 3 image" in run.failure.message
    assert tried == ["base"]
    report = json.loads((tmp_path / "out" / "reports" / "push-latest.json").read_text())
    assert [i["reason"] for i in report["images"][1:]] == ["stopped after base failed"] * 2
