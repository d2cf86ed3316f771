"""A registry's HTTP API (distribution v2): where it is, who we are, which manifest a tag names.

The docker daemon does the pushing; this module only talks to the registry
directly to check it answers and accepts our credentials before anything is
pushed, to skip tags that already hold the image, and to read each pushed
manifest back.

What a registry answers is read as it streams and never past MAX_ANSWER_BYTES,
and parsed with documents.load_json (at most MAX_DEPTH levels deep): a huge or deeply
nested answer is a RegistryError, like any other broken answer.

Credentials belong to one registry host and go nowhere else: a token service
(`realm`) on another host gets them only over https, and a client never uses
credentials read for another host.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import os
import re
import socket
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from ..documents import MAX_DEPTH, DocumentError, check_size, load_json, size_text
from ..errors import ConfigError, FactoryError
from ..model.names import DOCKER_HUB, canonical_host

if TYPE_CHECKING:  # requests loads where the client is made (the HTTP stack is slow to import)
    from requests import Response

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

HUB_API = "https://registry-1.docker.io"
HUB_AUTH_KEY = "https://index.docker.io/v1/"
MANIFEST_TYPES = (
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.index.v1+json",
)
ENV_USERNAME = "FACTORY_REGISTRY_USERNAME"
ENV_PASSWORD = "FACTORY_REGISTRY_PASSWORD"
ENV_PASSWORD_FILE = "FACTORY_REGISTRY_PASSWORD_FILE"
# The registry host the FACTORY_REGISTRY_* credentials belong to (default: the command's own registry).
ENV_HOST = "FACTORY_REGISTRY_HOST"
REDACTED = "******"
TIMEOUT_S = 30
# Seconds a registry may take to answer one request (connect, then each read); a stalled registry is a
# RegistryError after that, not a hang.
ENV_TIMEOUT = "FACTORY_REGISTRY_TIMEOUT_S"
# The most read of an answer the client parses (a manifest, a config or signature blob, a token): the
# manifest size the OCI distribution spec has registries accept; ours are a few kB.
MAX_ANSWER_BYTES = 4 * 1024 * 1024
CHUNK = 64 * 1024
REFUSED_HINT = (f"check what the registry serves there: an answer is read up to {size_text(MAX_ANSWER_BYTES)}, "
                f"nested at most {MAX_DEPTH} levels")


CONTENT_HINT = ("a digest is believed only when it is the sha256 of the bytes read: check the registry (or a "
                "proxy in front of it) for what it serves")
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


def is_digest(reference: str) -> bool:
    return DIGEST.fullmatch(reference) is not None


def request_timeout(environ: Mapping[str, str] | None = None, default: float = TIMEOUT_S) -> float:
    """FACTORY_REGISTRY_TIMEOUT_S when set (a number of seconds, 1 to 600), else the command's own default."""
    text = (os.environ if environ is None else environ).get(ENV_TIMEOUT, "").strip()
    if not text:
        return default
    try:
        seconds = float(text)
    except ValueError:
        seconds = 0.0
    if not 1 <= seconds <= 600:
        raise ConfigError(f"{ENV_TIMEOUT}={text!r} is no number of seconds from 1 to 600")
    return seconds


class RegistryError(FactoryError):
    """A registry request that failed; the message never holds a secret."""


# --- credentials -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Credentials:
    username: str = ""
    password: str = field(default="", repr=False)
    identity_token: str = field(default="", repr=False)
    source: str = ""
    host: str = ""  # the registry host these belong to (canonical_host); "" only in tests

    @property
    def secrets(self) -> list[str]:
        values = [self.password, self.identity_token]
        if self.username and self.password:
            values.append(base64.b64encode(f"{self.username}:{self.password}".encode()).decode())
        return [v for v in values if v]

    def auth_config(self, registry: str) -> dict[str, str]:
        """The X-Registry-Auth payload the daemon expects."""
        address = HUB_AUTH_KEY if canonical_host(registry) == DOCKER_HUB else registry
        if self.identity_token:
            return {"identitytoken": self.identity_token, "serveraddress": address}
        return {"username": self.username, "password": self.password, "serveraddress": address}

    def describe(self) -> str:
        who = self.username or "identity token"
        return f"{who} (from {self.source})"


def read_credentials(registry: str, *, username: str | None = None, password_file: str | None = None,
                     environ: Mapping[str, str] | None = None, docker_config: bool = True,
                     home: str | None = None) -> Credentials | None:
    """Who to be at `registry`: flags, then FACTORY_REGISTRY_* env, then the Docker config (`docker login`).

    A username and a password must come together; the password is read from a
    file (or `-` for stdin) or the environment, never from a command-line value.
    Flags are for the registry of the command they are given to. The env
    credentials are for FACTORY_REGISTRY_HOST, or else for `home` (the registry
    the command is about: `inv push`'s target, the factory's own registry for a
    cache or a mirror), so `--cache-from B` never sends them to B. The Docker
    config is looked up per host (its `auths` and credential helpers).
    """
    env = os.environ if environ is None else environ
    host = canonical_host(registry)
    if not (username or password_file):
        owner = env.get(ENV_HOST, "").strip() or (home or "").strip() or registry
        if canonical_host(owner) != host:  # another registry's: leave them out entirely
            env = {}
    user = username or env.get(ENV_USERNAME, "")
    password, source = "", ""
    if password_file:
        password, source = _read_secret_file(password_file, "--password-file"), "--password-file"
    elif env.get(ENV_PASSWORD):
        password, source = env[ENV_PASSWORD], ENV_PASSWORD
    elif env.get(ENV_PASSWORD_FILE):
        password, source = _read_secret_file(env[ENV_PASSWORD_FILE], ENV_PASSWORD_FILE), ENV_PASSWORD_FILE
    if user and password:
        return Credentials(user, password, source=source, host=host)
    if user or password:
        missing = "a password" if user else "a username"
        raise ConfigError(
            f"registry credentials lack {missing}",
            f"give both: --username (or {ENV_USERNAME}) and --password-file (or {ENV_PASSWORD} / "
            f"{ENV_PASSWORD_FILE})",
        )
    return _docker_config_credentials(registry) if docker_config else None


def _read_secret_file(path: str, what: str) -> str:
    try:
        text = sys.stdin.read() if path == "-" else Path(path).expanduser().read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read the password file given by {what} ({exc.strerror})") from None
    secret = text.rstrip("\r\n")
    if not secret:
        raise ConfigError(f"the password file given by {what} is empty")
    return secret


def _docker_config_credentials(registry: str) -> Credentials | None:
    """The entry `docker login` stored for this registry (config.json, credential helpers)."""
    from docker import auth
    from docker.errors import DockerException

    try:
        entry = auth.load_config().resolve_authconfig(None if canonical_host(registry) == DOCKER_HUB else registry)
    except DockerException as exc:
        raise RegistryError(f"cannot read the Docker credentials for {display_host(registry)}: {exc}",
                            "run `docker login` again, or pass --username and --password-file") from None
    if not entry:
        return None
    entry = {key.lower(): value for key, value in entry.items() if value}
    if not (entry.get("password") or entry.get("identitytoken")):
        return None
    return Credentials(entry.get("username", ""), entry.get("password", ""), entry.get("identitytoken", ""),
                       source="Docker config", host=canonical_host(registry))


class Redactor:
    """Removes every secret it knows from text that is about to be shown or written."""

    def __init__(self, secrets: list[str] | None = None):
        self.secrets = sorted({s for s in secrets or [] if s}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        return text


# --- where the registry is ---------------------------------------------------------------------


def display_host(registry: str) -> str:
    host = canonical_host(registry)
    return "Docker Hub (docker.io)" if host == DOCKER_HUB else host


def api_path(registry: str, repository: str) -> str:
    """The repository as the HTTP API names it: without the host, one-part Hub names under library/."""
    host = canonical_host(registry)
    for prefix in {host, registry.strip().rstrip("/")} - {""}:
        repository = repository.removeprefix(prefix + "/")
    if host == DOCKER_HUB and "/" not in repository:
        return f"library/{repository}"
    return repository


def is_insecure(registry: str, registry_config: Mapping[str, Any] | None) -> bool:  # the daemon's info, as parsed
    """Whether the daemon talks plain HTTP to this registry (daemon insecure-registries, 127.0.0.0/8 by default)."""
    host = canonical_host(registry)
    if host == DOCKER_HUB:
        return False
    config = registry_config or {}
    index = (config.get("IndexConfigs") or {}).get(host)
    if index is not None:
        return not index.get("Secure", True)
    networks = [ipaddress.ip_network(cidr, strict=False) for cidr in config.get("InsecureRegistryCIDRs") or []]
    hostname = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    hostname = hostname.strip("[]")
    for address in _addresses(hostname):
        if any(address in network for network in networks):
            return True
    return False


def _addresses(hostname: str) -> list[IPAddress]:
    try:
        return [ipaddress.ip_address(hostname)]
    except ValueError:
        pass
    try:
        return [ipaddress.ip_address(info[4][0]) for info in socket.getaddrinfo(hostname, None)]
    except (OSError, ValueError):
        return []


# --- talking to it ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Manifest:
    digest: str
    media_type: str
    config_digest: str | None  # the image ID for a single-platform image; None for an index
    size: int = field(default=0, compare=False)  # bytes of the manifest itself (a manifest list entry records it)
    document: dict[str, Any] | None = field(default=None, compare=False, repr=False)  # the parsed body


class HttpSession(Protocol):
    """What the client uses of a requests.Session (tests hand it a fake)."""

    def request(self, method: str, url: str, *, headers: Mapping[str, str], timeout: float, verify: bool | str,
                allow_redirects: bool, stream: bool, data: bytes = ...) -> Response: ...

    def get(self, url: str, *, params: Mapping[str, str], auth: tuple[str, str] | None, timeout: float,
            verify: bool | str, allow_redirects: bool, stream: bool) -> Response: ...


class RegistryClient:
    """Just enough of the distribution API: ping with auth, and GET a manifest by tag."""

    def __init__(self, registry: str, credentials: Credentials | None = None, *, insecure: bool = False,
                 session: HttpSession | None = None, timeout: float | None = None):
        import requests

        self.registry = registry
        self.host = canonical_host(registry)
        if credentials is not None and credentials.host and credentials.host != self.host:
            credentials = None  # read for another registry: never sent here
        self.credentials = credentials
        self.insecure = insecure
        self.timeout = request_timeout(default=TIMEOUT_S if timeout is None else timeout)
        self.session: HttpSession = session or requests.Session()
        self.redact = Redactor(credentials.secrets if credentials else [])
        self.base: str | None = HUB_API if self.host == DOCKER_HUB else None
        self.tokens: dict[str | None, str] = {}  # scope (None: /v2/ itself) -> bearer token
        self.basic = False
        if insecure:  # the daemon skips TLS verification for these too; say so once, not per request
            import urllib3

            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)

    @property
    def verify(self) -> bool | str:
        certs = Path("/etc/docker/certs.d") / self.host / "ca.crt"
        if self.insecure:
            return False
        return str(certs) if certs.is_file() else True

    def ping(self) -> None:
        """Check the registry answers and takes our credentials; raises RegistryError."""
        response = self._request("GET", "/v2/", scope=None)
        if response.status_code == 401:
            raise self._unauthorized()
        if response.status_code >= 400:
            raise RegistryError(f"{display_host(self.registry)} answered /v2/ with HTTP {response.status_code}")

    def manifest(self, repository: str, tag: str) -> Manifest | None:
        """The manifest a tag (or a digest) names now, or None when the registry has no such tag.

        Its digest is the sha256 of the body read, never the registry's word: a Docker-Content-Digest header
        that disagrees, or a body read by digest that hashes to another, is a RegistryError.
        """
        name = api_path(self.registry, repository)
        response = self._request("GET", f"/v2/{name}/manifests/{tag}", scope=f"repository:{name}:pull",
                                 headers={"Accept": ", ".join(MANIFEST_TYPES)}, stream=True)
        if not self._found(response, f"reading {repository}:{tag} back"):
            return None
        what = f"the manifest of {repository}:{tag} from {display_host(self.registry)}"
        body = self._read_answer(response, what)
        try:
            document = load_json(body, what=what, limit=MAX_ANSWER_BYTES)
        except DocumentError as exc:
            raise RegistryError(str(exc), REFUSED_HINT) from None
        digest = self._content_digest(body, response.headers.get("Docker-Content-Digest"), what)
        if is_digest(tag) and digest != tag:
            raise RegistryError(f"{what}: the registry served a body whose sha256 is {digest[:19]}..., "
                                f"not the digest asked for", CONTENT_HINT)
        media_type = response.headers.get("Content-Type", "").split(";")[0]
        document = document if isinstance(document, dict) else None
        config = (document or {}).get("config")
        config_digest = config.get("digest") if isinstance(config, dict) else None
        return Manifest(digest=digest, media_type=media_type, size=len(body), document=document,
                        config_digest=config_digest if isinstance(config_digest, str) else None)

    def put_manifest(self, repository: str, tag: str, body: bytes, media_type: str) -> str:
        """Store a manifest (a manifest list, a signature) under `tag`; returns its digest."""
        name = api_path(self.registry, repository)
        response = self._request("PUT", f"/v2/{name}/manifests/{tag}", scope=f"repository:{name}:pull,push",
                                 headers={"Content-Type": media_type}, data=body)
        self._accepted(response, f"storing the manifest {repository}:{tag}")
        return self._content_digest(body, response.headers.get("Docker-Content-Digest"),
                                    f"storing the manifest {repository}:{tag} at {display_host(self.registry)}")

    def _content_digest(self, body: bytes, header: str | None, what: str) -> str:
        """The digest of bytes we hold; a Docker-Content-Digest header that names another is the registry lying."""
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        if header and header.strip() != digest:
            raise RegistryError(f"{what}: {display_host(self.registry)} names the digest {header.strip()[:80]!r}, "
                                f"but the body's sha256 is {digest}", CONTENT_HINT)
        return digest

    def blob(self, repository: str, digest: str) -> bytes | None:
        """A blob's bytes (a signature's payload, its config), checked against its digest; None when absent."""
        name = api_path(self.registry, repository)
        response = self._request("GET", f"/v2/{name}/blobs/{digest}", scope=f"repository:{name}:pull", stream=True)
        if not self._found(response, f"reading blob {digest[:19]} of {repository}"):
            return None
        what = f"blob {digest[:19]} of {repository}"
        body = self._read_answer(response, what)
        try:  # only documents are read here; a manifest names their digest, and so their size, as it likes
            check_size(len(body), what=what, limit=MAX_ANSWER_BYTES)
        except DocumentError as exc:
            raise RegistryError(str(exc), REFUSED_HINT) from None
        if "sha256:" + hashlib.sha256(body).hexdigest() != digest:
            raise RegistryError(f"blob {digest[:19]} of {repository}: the registry served other bytes")
        return body

    def _read_answer(self, response: Response, what: str) -> bytes:
        """An answer's body as it streams (decompressed), never more than MAX_ANSWER_BYTES + 1 bytes: the
        registry chooses its size, and one byte more than the limit is enough to refuse it."""
        body = bytearray()
        try:
            for chunk in response.iter_content(CHUNK):
                body += chunk
                if len(body) > MAX_ANSWER_BYTES:
                    break
        except Exception as exc:  # requests' ChunkedEncodingError, ConnectionError, a read timeout
            raise RegistryError(self.redact(f"{what}: the answer broke off ({describe(exc)})")) from None
        finally:
            response.close()
        return bytes(body[:MAX_ANSWER_BYTES + 1])

    def put_blob(self, repository: str, data: bytes) -> str:
        """Upload a small blob in one request (POST, then PUT with its digest), unless it is there; its digest."""
        name = api_path(self.registry, repository)
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        scope = f"repository:{name}:pull,push"
        there = self._request("HEAD", f"/v2/{name}/blobs/{digest}", scope=scope)
        if there.status_code == 200:
            return digest
        started = self._request("POST", f"/v2/{name}/blobs/uploads/", scope=scope, data=b"")
        if started.status_code == 401:
            raise self._unauthorized()
        location = started.headers.get("Location")
        if started.status_code != 202 or not location:
            raise RegistryError(f"starting a blob upload to {repository}: HTTP {started.status_code}")
        if location.startswith("/"):
            location = (self.base or "") + location
        # The registry names where the upload goes; it must stay on the same host (credentials go with it).
        if not location.startswith((self.base or "") + "/"):
            raise RegistryError(f"{display_host(self.registry)} sent the blob upload to another host")
        path = location[len(self.base or ""):]
        path += ("&" if "?" in path else "?") + f"digest={digest}"
        done = self._request("PUT", path, scope=scope, data=data,
                             headers={"Content-Type": "application/octet-stream"})
        self._accepted(done, f"uploading blob {digest[:19]} to {repository}")
        return digest

    # The one reading of a registry's status codes: 401 is our credentials, 404 absence (for a read), any
    # other 4xx/5xx an error naming what was tried.
    def _found(self, response: Any, what: str) -> bool:
        """A streamed read's answer: True to read its body, False for 404 (closed); raises on an error."""
        if response.status_code < 400:
            return True
        response.close()
        if response.status_code == 404:
            return False
        if response.status_code == 401:
            raise self._unauthorized()
        raise RegistryError(f"{what}: HTTP {response.status_code}")

    def _accepted(self, response: Any, what: str) -> None:
        """A write's answer: raises unless the registry took it."""
        if response.status_code == 401:
            raise self._unauthorized()
        if response.status_code >= 400:
            raise RegistryError(f"{what}: HTTP {response.status_code} {response.text[:200]}")

    def _unauthorized(self) -> RegistryError:
        where = display_host(self.registry)
        if not self.credentials:
            return RegistryError(f"{where} requires a login: unauthorized",
                                 f"`docker login {self.host}`, or pass --username and --password-file "
                                 f"({ENV_USERNAME}/{ENV_PASSWORD} are used only for {ENV_HOST}, or else the "
                                 "command's own registry)")
        return RegistryError(f"{where} refused the credentials of {self.credentials.describe()}: unauthorized",
                             "check the username and password (the password is never shown)")

    def _request(self, method: str, path: str, *, scope: str | None, headers: dict[str, str] | None = None,
                 data: bytes | None = None, stream: bool = False) -> Response:
        """The answer; with `stream`, its body is not read yet (the caller reads it with a limit, or closes it)."""
        headers = dict(headers or {})
        response = self._send(method, path, headers, scope, data, stream)
        if response.status_code == 401 and "WWW-Authenticate" in response.headers:
            if self._answer_challenge(response.headers["WWW-Authenticate"], scope):
                response.close()
                response = self._send(method, path, headers, scope, data, stream)
        return response

    def _send(self, method: str, path: str, headers: dict[str, str], scope: str | None, data: bytes | None = None,
              stream: bool = False) -> Response:
        if self.basic and self.credentials:
            headers["Authorization"] = "Basic " + base64.b64encode(
                f"{self.credentials.username}:{self.credentials.password}".encode()).decode()
        elif self.tokens.get(scope):
            headers["Authorization"] = f"Bearer {self.tokens[scope]}"
        bases = [self.base] if self.base else self._candidate_bases()
        last_error: Exception | None = None
        for base in bases:
            try:
                response = self.session.request(method, base + path, headers=headers, timeout=self.timeout,
                                                verify=self.verify, allow_redirects=True, stream=stream,
                                                **({"data": data} if data is not None else {}))
            except Exception as exc:  # requests' ConnectionError, SSLError, Timeout...
                last_error = exc
                continue
            self.base = base
            return response
        raise RegistryError(self.redact(f"{display_host(self.registry)} is not reachable: {describe(last_error)}"))

    def _candidate_bases(self) -> list[str]:
        # Like the daemon: HTTPS first; plain HTTP only for registries the daemon treats as insecure.
        return [f"https://{self.host}"] + ([f"http://{self.host}"] if self.insecure else [])

    def _answer_challenge(self, header: str, scope: str | None) -> bool:
        scheme, params = parse_challenge(header)
        if scheme == "basic":
            if not self.credentials or not self.credentials.password or self.basic:
                return False
            self.basic = True
            return True
        if scheme == "bearer" and params.get("realm"):
            self.tokens[scope] = self._token(params, scope)
            return True
        return False

    def _token(self, params: dict[str, str], scope: str | None) -> str:
        realm = params["realm"]
        query = {"service": params["service"]} if params.get("service") else {}
        if scope or params.get("scope"):
            query["scope"] = scope or params["scope"]
        try:
            parts = urlsplit(realm)
            realm_host = parts.netloc.rpartition("@")[2].lower()
        except ValueError:
            parts, realm_host = None, ""
        if parts is None or parts.scheme not in ("http", "https") or not realm_host:
            raise RegistryError(f"{display_host(self.registry)} names a token service {realm!r} that is no http(s) URL")
        same_host = realm_host == self.host.lower()
        auth = None
        # The registry chooses the realm: our password goes there only over https, or to the registry itself.
        if self.credentials and self.credentials.password and (parts.scheme == "https" or same_host):
            auth = (self.credentials.username, self.credentials.password)
        # Certificate checks are off only for the registry the daemon itself treats as insecure.
        verify = self.verify if same_host else True
        try:
            response = self.session.get(realm, params=query, auth=auth, timeout=self.timeout, verify=verify,
                                        allow_redirects=False, stream=True)
        except Exception as exc:
            raise RegistryError(self.redact(f"token service {realm} is not reachable: {describe(exc)}")) from None
        if response.status_code >= 400 or response.status_code in (301, 302, 303, 307, 308):
            response.close()
        if response.status_code == 401:
            raise self._unauthorized()
        if response.status_code >= 400 or response.status_code in (301, 302, 303, 307, 308):
            raise RegistryError(f"token service {realm} answered HTTP {response.status_code}")
        what = f"the answer of the token service {realm}"
        try:
            data = load_json(self._read_answer(response, what), what=what, limit=MAX_ANSWER_BYTES)
        except DocumentError as exc:
            raise RegistryError(f"{exc} (HTTP {response.status_code}, "
                                f"{response.headers.get('Content-Type') or 'no type'})",
                                "the registry's token service is broken or misconfigured") from None
        token = (data.get("token") or data.get("access_token")) if isinstance(data, dict) else None
        if not isinstance(token, str) or not token:
            raise RegistryError(f"token service {realm} answered JSON without a token",
                                "the registry's token service is broken or misconfigured")
        return token


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """`Bearer realm="...",service="..."` -> ("bearer", {"realm": ..., "service": ...})."""
    scheme, _, rest = header.strip().partition(" ")
    return scheme.lower(), dict(re.findall(r'(\w+)="([^"]*)"', rest))


def describe(exc: Exception | None) -> str:
    """A short reason for a requests failure: 'connection refused', 'timed out', ..."""
    if exc is None:
        return "no answer"
    text = str(exc)
    lowered = text.lower()
    for needle, short in (("connection refused", "connection refused"), ("timed out", "timed out"),
                          ("name or service not known", "unknown host"), ("nodename nor servname", "unknown host"),
                          ("connection reset", "connection reset"), ("certificate verify failed",
                                                                      "TLS certificate not trusted")):
        if needle in lowered:
            return short
    first = text.splitlines()[0] if text else type(exc).__name__
    return first if len(first) < 200 else first[:197] + "..."
