"""Keep secrets out of everything a connector container prints.

Container output ends up in `docker logs`, Airflow task logs and log shippers,
so every line written to stdout/stderr passes through a `Redactor` that masks

* the exact values of secret-looking fields of the configuration (passwords,
  tokens, keys, ...), collected once the configuration is loaded;
* anything that looks like a secret regardless of the config: JWTs, bearer
  tokens, passwords inside connection URLs (`postgresql://user:secret@host`)
  and `password=...` / `"token": "..."` style assignments.
"""

from __future__ import annotations

import io
import json
import re
import threading
from typing import Any, Iterable, TextIO

MASK = "********"

# Field names whose values are secrets: matched anywhere in the name, case
# insensitively, so camelCase names (`awsSecretAccessKey`, `dbPassword`) count.
_SECRET_FIELD = re.compile(
    r"(?i)password|passwd|passphrase|secret|token|jwt|api_?key|private_?key|access_?key"
    r"|account_?key|credential|connection_?string|^pwd$"
)
# ...unless the name says the value only points at or describes the secret.
_NOT_A_SECRET_FIELD = re.compile(
    r"(?i)(file|path|url|uri|endpoint|type|name|provider|loader|manager|expiry"
    r"|expiration|location|region|enabled|header|prefix|mode)s?$"
)
# Values this short are more likely flags ("none", "JWT") than secrets; masking
# them everywhere would garble the logs without protecting anything.
_MIN_SECRET_LENGTH = 4

_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*")
_BEARER = re.compile(r"(?i)(\bbearer\s+)[A-Za-z0-9._~+/=-]{8,}")
_URL_PASSWORD = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://[^:/?#@\s]*:)([^@/?#\s]+)(@)")
_SECRET_ASSIGNMENT = re.compile(
    r"(?i)(\b[\w-]*(?:password|passwd|pwd|secret|token|api[_-]?key|private[_-]?key"
    r"|access[_-]?key)[\w-]*[\"']?\s*[:=]\s*[\"']?)(?!\*{4})([^\s\"',;&}]+)"
)


def secret_values(document: Any) -> set:
    """String values of secret-named fields anywhere in a config document."""
    found: set = set()
    for key, value in _leaves(document):
        if isinstance(value, str) and is_secret_field(key):
            found.update(_variants(value))
    return {value for value in found if len(value) >= _MIN_SECRET_LENGTH}


def is_secret_field(name: str) -> bool:
    return bool(_SECRET_FIELD.search(name)) and not _NOT_A_SECRET_FIELD.search(name)


def _leaves(document: Any, key: str = "") -> Iterable[tuple]:
    if isinstance(document, dict):
        for child_key, child in document.items():
            yield from _leaves(child, str(child_key))
    elif isinstance(document, list):
        for child in document:
            yield from _leaves(child, key)
    else:
        yield key, document


def _variants(secret: str) -> Iterable[str]:
    """The forms a secret can take in output: as is, JSON-escaped, line by line."""
    yield secret.strip()
    yield json.dumps(secret)[1:-1]
    # A multi-line secret (a PEM private key) is printed line by line.
    yield from (line.strip() for line in secret.splitlines())


class Redactor:
    """Masks known secret values and secret-looking patterns in text."""

    def __init__(self) -> None:
        self._secrets: tuple = ()
        self._lock = threading.Lock()

    def add_secrets_from(self, document: Any) -> None:
        with self._lock:
            merged = set(self._secrets) | secret_values(document)
            # Longest first, so a secret containing another is masked whole.
            self._secrets = tuple(sorted(merged, key=len, reverse=True))

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        text = _JWT.sub(MASK, text)
        text = _BEARER.sub(rf"\g<1>{MASK}", text)
        text = _URL_PASSWORD.sub(rf"\g<1>{MASK}\g<3>", text)
        return _SECRET_ASSIGNMENT.sub(rf"\g<1>{MASK}", text)


class RedactingStream(io.TextIOBase):
    """A text stream that redacts and forwards whole lines, flushing each one.

    Lines are held until complete so a secret is never split across two
    writes (print() writes the text and the newline separately), and each
    line is flushed at once so logs stream to the orchestrator unbuffered.
    """

    def __init__(self, target: TextIO, redactor: Redactor) -> None:
        super().__init__()
        self._target = target
        self._redactor = redactor
        self._pending = ""
        self._finished = False
        self._lock = threading.RLock()

    @property
    def target(self) -> TextIO:
        return self._target

    def write(self, text: str) -> int:
        with self._lock:
            if self._finished:
                return len(text)
            self._pending += text
            complete, newline, rest = self._pending.rpartition("\n")
            if newline:
                self._pending = rest
                self._forward(complete + newline)
        return len(text)

    def flush(self) -> None:
        # An explicit flush (progress output ending in "\r") releases the partial line.
        with self._lock:
            if self._pending:
                pending, self._pending = self._pending, ""
                self._forward(pending)
            else:
                self._target.flush()

    def write_last(self, line: str) -> None:
        """Write the final line, on a line of its own; anything written later is dropped.

        The summary must stay the last line, while framework threads may still
        print until the process exits.
        """
        with self._lock:
            if self._pending:
                pending, self._pending = self._pending, ""
                self._forward(pending + "\n")
            self._forward(line)
            self._finished = True

    def _forward(self, text: str) -> None:
        self._target.write(self._redactor.redact(text))
        self._target.flush()

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return self._target.isatty()

    def fileno(self) -> int:
        return self._target.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self._target, "encoding", "utf-8")

    @property
    def errors(self) -> str:  # type: ignore[override]
        return getattr(self._target, "errors", "strict")
