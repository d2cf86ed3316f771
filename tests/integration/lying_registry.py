"""A registry that lies: a small HTTP server in front of a real docker-registry.

It forwards every request (the daemon's pushes and pulls, the factory's own client) to the real registry and
gives the answer back, except where a test installed a lie for a request: a Docker-Content-Digest header that
names another digest, another manifest's body under the asked one's name, a redirect, a stall, or an answer
of its own (a huge or deeply nested JSON document). What the real registry holds is read around the liar,
straight from `upstream`.
"""

from __future__ import annotations

import http.client
import http.server
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-authorization",
              "proxy-authenticate"}


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass
class Lie:
    method: str  # "GET", "PUT", ... or "*"
    path: re.Pattern
    change: Callable[[LyingRegistry, Answer | None, str], Answer]  # (liar, upstream's answer or None, path)
    forward: bool = True  # False: answer without asking the real registry
    times: int | None = None  # None: every matching request
    used: int = 0


@dataclass
class LyingRegistry:
    upstream: str  # host:port of the real registry
    host: str = ""  # host:port the liar listens on
    lies: list[Lie] = field(default_factory=list)
    seen: list[tuple[str, str]] = field(default_factory=list)  # (method, path) of every request
    lied: list[tuple[str, str]] = field(default_factory=list)

    # --- installing lies ---------------------------------------------------------------------------

    def lie(self, method: str, path: str, change, *, forward: bool = True, times: int | None = None) -> None:
        self.lies.append(Lie(method, re.compile(path), change, forward, times))

    def clear(self) -> None:
        self.lies.clear()
        self.lied.clear()

    def header_digest(self, path: str, digest: str, method: str = "GET", times: int | None = None) -> None:
        """Docker-Content-Digest names `digest`, whatever the body is."""
        def change(_, answer, __):
            answer.headers["Docker-Content-Digest"] = digest
            return answer
        self.lie(method, path, change, times=times)

    def swap_body(self, path: str, other_path: str, times: int | None = None) -> None:
        """The body (and type) of `other_path` under `path`'s status and Docker-Content-Digest header."""
        def change(liar, answer, _):
            other = liar.fetch("GET", other_path, {"Accept": ACCEPT})
            headers = dict(answer.headers)
            headers["Content-Type"] = other.headers.get("Content-Type", headers.get("Content-Type", ""))
            return Answer(answer.status, headers, other.body)
        self.lie("GET", path, change, times=times)

    def answer(self, path: str, status: int, body: bytes, headers: dict[str, str] | None = None,
               method: str = "GET") -> None:
        """An answer of the liar's own (the real registry is not asked)."""
        self.lie(method, path, lambda *_: Answer(status, dict(headers or {}), body), forward=False)

    def redirect(self, path: str, location: str) -> None:
        self.answer(path, 307, b"", {"Location": location})

    def stall(self, path: str, seconds: float) -> None:
        def change(_, answer, __):
            time.sleep(seconds)
            return answer
        self.lie("GET", path, change)

    # --- the real registry, around the liar ----------------------------------------------------------

    def fetch(self, method: str, path: str, headers: dict[str, str] | None = None, body: bytes | None = None) -> Answer:
        connection = http.client.HTTPConnection(self.upstream, timeout=60)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            data = response.read()
            return Answer(response.status, {k: v for k, v in response.getheaders()}, data)
        finally:
            connection.close()

    def _find(self, method: str, path: str) -> Lie | None:
        for lie in self.lies:
            if lie.method in ("*", method) and lie.path.search(path) and (lie.times is None or lie.used < lie.times):
                lie.used += 1
                return lie
        return None


ACCEPT = ", ".join((
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.index.v1+json",
))


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    liar: LyingRegistry

    def log_message(self, *args) -> None:  # quiet: pytest shows what failed
        pass

    def _body(self) -> bytes | None:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(data)
                data += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else (b"" if self.command in ("PUT", "POST", "PATCH") else None)

    def _serve(self) -> None:
        liar = self.liar
        body = self._body()
        liar.seen.append((self.command, self.path))
        lie = liar._find(self.command, self.path)
        answer = None
        if lie is None or lie.forward:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            answer = liar.fetch(self.command, self.path, headers, body)
        if lie is not None:
            liar.lied.append((self.command, self.path))
            answer = lie.change(liar, answer, self.path)
        assert answer is not None
        self.send_response(answer.status)
        for key, value in answer.headers.items():
            if key.lower() not in HOP_BY_HOP and key.lower() != "content-length":
                self.send_header(key, value)
        head_length = answer.headers.get("Content-Length") or answer.headers.get("content-length")
        # A HEAD answer has no body but says how long the GET's would be (the daemon reads a blob's size so).
        self.send_header("Content-Length", head_length if self.command == "HEAD" and head_length
                         else str(len(answer.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(answer.body)

    do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _serve


class Serving:
    """The liar on a free port of 127.0.0.1, until stop()."""

    def __init__(self, upstream: str, port: int):
        handler = type("Handler", (_Handler,), {})
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
        self.server.daemon_threads = True
        self.liar = LyingRegistry(upstream, f"127.0.0.1:{port}")
        handler.liar = self.liar
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def nested_json(size: int = 4 * 1024 * 1024) -> bytes:
    """A JSON document of `size` bytes that is nothing but nesting: `[[[[...]]]]`."""
    half = size // 2
    return b"[" * half + b"]" * half
