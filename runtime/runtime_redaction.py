"""What a secret is, and keeping secrets out of everything a connector container prints.

One rule, used twice: the container masks what it finds in its config, and
`inv run-local` (which imports this module; it imports nothing of the tool)
sends a config in which it finds anything as a mounted file rather than in env
`config`, which `docker inspect` shows. A secret is

* the value of a field whose name says secret (`password`, `dbPassword`,
  `jwtToken`, `api_key`, `connectionString`, ...), unless the name says the
  value only points at or describes one (`passwordFile`, `tokenUrl`, `tokenType`);
* a secret inside any value: a password in a URL (`postgresql://user:pw@host`,
  `user:pw@host:5432`), a JWT, a bearer token, a `password=...` assignment.

Container output ends up in `docker logs`, Airflow task logs and log shippers,
so every line written to stdout/stderr passes through a `Redactor` that masks
the secrets found in the configuration wherever they appear, and anything in
the text that looks like a secret by the second kind of rule.
"""

from __future__ import annotations

import io
import json
import re
import threading
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, List, Optional, TextIO

MASK = "********"

# A name's words, for snake_case, kebab-case and camelCase names alike.
_NAME_WORDS = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")
# A word ending in one of these names a secret: `password`, `PGPASSWORD`, `clientsecret`, `idToken`.
_SECRET_WORD_ENDINGS = (
    "password", "passwd", "pwd", "passphrase", "secret", "token", "jwt", "credential", "authorization",
)
# Two words that name a secret together (also written as one word: `apikey`).
_SECRET_PAIRS = (
    "apikey", "privatekey", "accesskey", "accountkey", "secretkey", "sslkey", "clientkey", "encryptionkey",
    "masterkey", "sharedkey", "signingkey", "connectionstring",
)
# A last word that says the value only points at or describes the secret.
_POINTER_WORDS = frozenset({
    "file", "path", "url", "uri", "endpoint", "type", "name", "provider", "loader", "manager", "expiry",
    "expiration", "location", "region", "enabled", "header", "prefix", "mode", "env", "variable", "field", "length",
})
_KNOWN_WORDS = frozenset(_SECRET_WORD_ENDINGS) | frozenset(_SECRET_PAIRS) | _POINTER_WORDS | {"key", "string"}
# Values this short are more likely flags ("none", "JWT") than secrets; masking
# them everywhere would garble the logs without protecting anything.
_MIN_SECRET_LENGTH = 4


def is_secret_field(name: str) -> bool:
    """Whether a field (or an assignment in text) of this name holds a secret."""
    words = [_singular(word.lower()) for word in _NAME_WORDS.findall(str(name))]
    if not words or words[-1] in _POINTER_WORDS:
        return False
    pairs = [first + second for first, second in zip(words, words[1:])]
    return any(word.endswith(_SECRET_WORD_ENDINGS + _SECRET_PAIRS) for word in words) or any(
        pair in _SECRET_PAIRS for pair in pairs
    )


def _singular(word: str) -> str:
    return word[:-1] if word.endswith("s") and word[:-1] in _KNOWN_WORDS else word


@dataclass(frozen=True)
class _SecretPattern:
    """Text that holds a secret whatever the config says; `secret_group` is the secret itself."""

    regex: "re.Pattern[str]"
    secret_group: int
    name_group: Optional[int] = None  # when set, the match counts only if this group names a secret field

    def matches(self, text: str) -> Iterator["re.Match[str]"]:
        for match in self.regex.finditer(text):
            if self.name_group is None or is_secret_field(match.group(self.name_group)):
                yield match


_SECRET_PATTERNS = (
    _SecretPattern(re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"), 0),  # a JWT
    _SecretPattern(re.compile(r"(?i)\bbearer\s+([A-Za-z0-9._~+/=-]{8,})"), 1),
    # A password in a URL: scheme://user:password@host
    _SecretPattern(re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^:/?#@\s]*:([^@/?#\s]+)@"), 1),
    # password=..., "apiKey": "...", PGPASSWORD=... (never a value already masked)
    _SecretPattern(re.compile(r"\b([\w-]+)[\"']?\s*[:=]\s*[\"']?(?!\*{4})([^\s\"',;&}]+)"), 2, name_group=1),
)
# A whole value of the form user:password@host[:port] (a `host_port` with credentials).
_USERINFO_VALUE = re.compile(r"[^\s:/@]+:([^\s@/]+)@[^\s@]+")


@dataclass(frozen=True)
class Secret:
    """A secret in a config: the field it is in, and the secret text itself."""

    field: str
    value: str


def find_secrets(document: Any) -> List[Secret]:
    """Every secret in a config document, by the field's name or inside its value."""
    found: List[Secret] = []
    for name, value in _leaves(document):
        text = _scalar_text(value)
        if not text.strip():
            continue
        if is_secret_field(name):
            found.append(Secret(name, text))
        else:
            found.extend(Secret(name, secret) for secret in secrets_in_value(text))
    return found


def secrets_in_value(text: str) -> List[str]:
    """The secrets inside one value (or one line of text)."""
    found = [match.group(pattern.secret_group) for pattern in _SECRET_PATTERNS for match in pattern.matches(text)]
    userinfo = _USERINFO_VALUE.fullmatch(text.strip())
    return found + ([userinfo.group(1)] if userinfo else [])


def secret_values(document: Any) -> set:
    """The texts to mask wherever they appear: the secrets of a config document, in every form they print in."""
    found = {variant for secret in find_secrets(document) for variant in _variants(secret.value)}
    return {value for value in found if len(value) >= _MIN_SECRET_LENGTH}


def _scalar_text(value: Any) -> str:
    # Numbers count (YAML reads an unquoted numeric password as one); booleans and nulls are no secrets.
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return ""
    return str(value)


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


def _mask_patterns(text: str) -> str:
    for pattern in _SECRET_PATTERNS:
        spans = [match.span(pattern.secret_group) for match in pattern.matches(text)]
        for start, end in reversed(spans):  # from the end, so earlier spans stay valid
            text = text[:start] + MASK + text[end:]
    return text


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
        return _mask_patterns(text)


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
