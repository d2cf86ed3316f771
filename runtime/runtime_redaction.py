"""What a secret is, and keeping secrets out of everything a connector container prints.

One rule, used twice: the container masks what it finds in its config, and
`inv run-local` (which imports this module; it imports nothing of the tool)
sends a config in which it finds anything as a mounted file rather than in env
`config`, which `docker inspect` shows. A secret is

* the value of a field whose name says secret (`password`, `dbPassword`,
  `jwtToken`, `api_key`, `ssh_key`, `connectionString`, `Cookie`, ...), unless the
  name says the value only points at or describes one (`passwordFile`, `tokenUrl`, `tokenType`);
* a secret inside any value: a password in a URL (`postgresql://user:pw@host`,
  `user:pw@host:5432`, Oracle's `user/pw@host:1521/service`), a JWT, a bearer
  token, a `password=...` assignment, a `Cookie:` header.

A URL's password is what SQLAlchemy's `make_url` reads as one (`/`, `#`, `?`
and spaces included), and a raw `@` in it is kept in the password: the
userinfo ends at the last `@` before the host (`url_without_userinfo`, which
the factory's image source label uses too).

Container output ends up in `docker logs`, Airflow task logs and log shippers,
so every line written to stdout/stderr passes through a `Redactor` that masks
the secrets found in the configuration wherever they appear, and anything in
the text that looks like a secret by the second kind of rule.
"""

from __future__ import annotations

import base64
import binascii
import functools
import io
import json
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TextIO
from urllib.parse import quote, unquote

MASK = "********"

# A name's words, for snake_case, kebab-case, dotted and camelCase names alike.
_NAME_WORDS = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")
# A word ending in one of these names a secret: `password`, `PGPASSWORD`, `clientsecret`, `idToken`, `keytab`.
_SECRET_WORD_ENDINGS = (
    "password", "passwd", "pwd", "passphrase", "secret", "token", "jwt", "credential", "authorization", "keytab",
)
# Two words that name a secret together (also written as one word: `apikey`).
_SECRET_PAIRS = (
    "apikey", "privatekey", "accesskey", "accountkey", "secretkey", "sslkey", "clientkey", "encryptionkey",
    "masterkey", "sharedkey", "signingkey", "connectionstring", "tlskey",
    "password", "passphrase",  # passWord, passPhrase
    "sshkey", "authkey", "storagekey", "hmackey",
    "keystorekey",  # Kafka's ssl.keystore.key: a private key, with or without its PEM header
    "userinfo",  # Kafka schema registry's basic.auth.user.info (user:password)
    "jaasconfig",  # Kafka's sasl.jaas.config holds the password inside a login module line
    "httpauth", "basicauth",  # Elasticsearch's http_auth: user:password
)
# A word that names a secret wherever it stands: a personal access token (`databricksPAT`).
_SECRET_WORDS = frozenset({"pat"})
# Names a secret as (the end of) the last word only: a `Cookie` header carries a session, a `cookieDomain` not.
_SECRET_LAST_WORDS = ("cookie",)
# A last word that says the value only points at or describes the secret.
_POINTER_WORDS = frozenset({
    "file", "path", "url", "uri", "endpoint", "type", "name", "provider", "loader", "manager", "expiry",
    "expiration", "location", "region", "enabled", "header", "prefix", "mode", "env", "variable", "field", "length",
})
_KNOWN_WORDS = (frozenset(_SECRET_WORD_ENDINGS + _SECRET_PAIRS + _SECRET_LAST_WORDS) | _SECRET_WORDS | _POINTER_WORDS
                | {"key", "string"})
# Values this short are more likely flags ("none", "JWT") than secrets; masking
# them everywhere would garble the logs without protecting anything.
_MIN_SECRET_LENGTH = 4
# Keys whose value is named by what holds it: {"password": {"value": ...}}, {"name": "X-Api-Key", "value": ...}.
_VALUE_KEYS = frozenset({"value", "values", "secretvalue", "data", "content"})
_ENTRY_NAME_KEYS = frozenset({"name", "key", "header", "headername", "field"})
# A command-line flag in an argument list: ["--password", X].
_FLAG = re.compile(r"--?([A-Za-z][\w.-]*)")
# pydantic shortens a value it echoes (`input_value='abc...xyz'`) to this many characters of its repr.
_ECHO_LIMIT, _ECHO_HEAD, _ECHO_TAIL = 50, 25, 24


@functools.lru_cache(maxsize=4096)  # log lines repeat the same few names
def is_secret_field(name: str) -> bool:
    """Whether a field (or an assignment in text) of this name holds a secret."""
    words = [_singular(word.lower()) for word in _NAME_WORDS.findall(str(name))]
    if not words or words[-1] in _POINTER_WORDS:
        return False
    pairs = [first + second for first, second in zip(words, words[1:], strict=False)]
    return (any(word.endswith(_SECRET_WORD_ENDINGS + _SECRET_PAIRS) or word in _SECRET_WORDS for word in words)
            or any(pair in _SECRET_PAIRS for pair in pairs) or words[-1].endswith(_SECRET_LAST_WORDS))


def _singular(word: str) -> str:
    stem = word[:-1]
    known = stem in _KNOWN_WORDS or stem.endswith(_SECRET_WORD_ENDINGS + _SECRET_PAIRS + _SECRET_LAST_WORDS)
    return stem if word.endswith("s") and known else word  # `dbcredentials` as `dbcredential`


def _is_basic_credential(text: str) -> bool:
    """Whether text is base64 of `user:password` (HTTP Basic), not an ordinary word after "basic"."""
    try:
        decoded = base64.b64decode(text, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return False
    return ":" in decoded


@dataclass(frozen=True)
class _SecretPattern:
    """Text that holds a secret whatever the config says; `secret_group` is the secret itself.

    Every pattern may only start where the run of characters it scans starts
    (a lookbehind or a literal), and its repeats are bounded or end at a
    character outside their class: each character is then scanned a bounded
    number of times, and a 100 KiB log line costs no more than a short one times its length.
    """

    regex: re.Pattern[str]
    secret_group: int
    name_group: int | None = None  # when set, the match counts only if this group names a secret field
    accept: Callable[[str], bool] | None = None  # when set, the secret must also pass this check

    def spans(self, text: str) -> Iterator[tuple[int, int]]:
        """Where the secrets are in text, in order."""
        for match in self.regex.finditer(text):
            if self.name_group is not None and not is_secret_field(match.group(self.name_group)):
                continue
            if self.accept is not None and not self.accept(match.group(self.secret_group)):
                continue
            yield match.span(self.secret_group)


# Where a URL starts: its scheme as RFC 3986 writes it and as make_url reads it (`mysql+pymysql`, `oracle_db`).
_URL_SCHEME = re.compile(r"(?<![\w+.-])[\w+.-]{1,64}://")
# make_url's user name ends at the first of these; a `:` starts the password.
_USER_END = re.compile(r"[:/]")
# In running text a URL ends at a space or a quote.
_TEXT_TOKEN = re.compile(r"[^\s\"']+")
# How far into a URL in running text its userinfo is looked for: bounded, so that a line of many
# `x://a:` costs no more than its length times this. A config's values are read whole.
_TEXT_USERINFO_LIMIT = 1024


def _userinfo(authority: str) -> tuple[int | None, int, int] | None:
    """The userinfo at the start of a URL's authority (what follows `scheme://`), as make_url reads it.

    make_url's user runs to the first `:` or `/`, and a password from that `:` to the first `@`, whatever
    it holds (`/`, `#`, `?`, spaces); without one, the user runs to the last `@` before that `:` or `/`.
    A raw `@` in a password leaves the rest of it in what make_url then takes for the host: the userinfo
    really ends at the last `@` before the path. Returns (where the password starts, or None when there
    is none; make_url's end of the userinfo; the last `@` before the path), or None without userinfo.
    """
    user_end = _USER_END.search(authority)
    password, first_at = None, -1
    if user_end is not None and user_end.group() == ":":
        first_at = authority.find("@", user_end.end())
        if first_at >= 0:
            password = user_end.end()
    if first_at < 0:
        first_at = authority.rfind("@", 0, user_end.start() if user_end else len(authority))
        if first_at < 0:
            return None
    # The host and port end at the path; an `@` before it still belongs to the password. (make_url reads
    # what follows a `?` there as a query, but as a user name where it starts the URL: `?` does not end it.)
    path = authority.find("/", first_at + 1)
    last_at = authority.rfind("@", first_at + 1, path if path >= 0 else len(authority))
    return password, first_at, max(first_at, last_at)


def _password_spans(authority: str, offset: int) -> Iterator[tuple[int, int]]:
    """The password in the userinfo, to the last `@` and (also a secret on its own) to make_url's end of it."""
    found = _userinfo(authority)
    if found is None or found[0] is None:
        return
    start, first_at, last_at = found
    for end in sorted({first_at, last_at}, reverse=True):  # longest first: masked whole, not piece by piece
        if end > start:
            yield offset + start, offset + end


def url_without_userinfo(url: str) -> str:
    """The URL without its userinfo (user, password, token), however many `@` and `/` the password holds."""
    scheme = _URL_SCHEME.match(url)
    found = _userinfo(url[scheme.end():]) if scheme else None
    return url if found is None else url[:scheme.end()] + url[scheme.end() + found[2] + 1:]


class _UrlPasswords:
    """Every URL's password in running text (a log line), where URLs end at a space or a quote."""

    def spans(self, text: str) -> Iterator[tuple[int, int]]:
        if "://" not in text:
            return
        for token in _TEXT_TOKEN.finditer(text):
            if "://" not in token.group():
                continue
            for scheme in _URL_SCHEME.finditer(token.group()):
                start = token.start() + scheme.end()
                yield from _password_spans(text[start:min(token.end(), start + _TEXT_USERINFO_LIMIT)], start)


_SECRET_PATTERNS = (
    # A JWT.
    _SecretPattern(re.compile(r"(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"), 0),
    # A private key's body, also JSON-escaped (a GCP key file's "private_key").
    _SecretPattern(re.compile(r"-----BEGIN [A-Z0-9 ]{0,40}PRIVATE KEY-----([A-Za-z0-9+/=\s\\]{16,})"), 1),
    # The credentials of an Authorization header, whatever the scheme (`Basic <b64>`, `token X`, `Bearer X`).
    _SecretPattern(re.compile(
        r"(?i)(?<![\w-])(?:proxy-)?authorization[\"']?\s*[:=]\s*[\"']?"
        r"(?:(?:basic|bearer|token|digest|negotiate|ntlm|apikey)\s+)?(?!\*{4})([^\s\"',;]+)"), 1),
    _SecretPattern(re.compile(r"(?i)\bbearer\s+([A-Za-z0-9._~+/=-]{8,})"), 1),
    _SecretPattern(re.compile(r"(?i)\bbasic\s+([A-Za-z0-9+/]{4,}={0,2})(?![A-Za-z0-9+/=])"), 1,
                   accept=_is_basic_credential),
    # `token X` as GitHub-style APIs print it: a long token word with a digit (not "token validation").
    _SecretPattern(re.compile(r"(?i)(?<![\w-])token\s+(?=[A-Za-z0-9._~+/=-]*[0-9])([A-Za-z0-9._~+/=-]{16,})"), 1),
    # Kafka's sasl.jaas.config, masked whole up to its closing `;` (the login module line names user and password).
    _SecretPattern(re.compile(r"(?i)\b(?:sasl\.)?jaas\.config[\"']?\s*[:=]\s*[\"']?([^;\n]{1,4096};?)"), 1),
    # A password in a URL: scheme://user:password@host
    _UrlPasswords(),
    # A Cookie header (a session), masked whole to the end of the line: `Cookie: a=1; b=2`.
    _SecretPattern(re.compile(r"(?i)(?<![\w-])(?:set-)?cookie[\"']?[ \t]*[:=][ \t]*[\"']?(?!\*{4})([^\r\n\"'\\]+)"), 1),
    # A flag and its value: `--password X`, "'--password', 'X'" (a printed argument list).
    _SecretPattern(re.compile(
        r"(?<![\w-])--?([A-Za-z][\w.-]{0,127})(?:[\"']?\s*,\s*[\"']?|\s+[\"']?)(?![-*])([^\s\"',;]+)"), 2,
        name_group=1),
    # password=..., "apiKey": "..." (also JSON-escaped), PGPASSWORD=..., ssl.keystore.password=...
    # (never a value already masked, nor a null)
    _SecretPattern(re.compile(
        r"(?<![\w.-])([\w.-]{1,128})(?:\\?[\"'])?\s*[:=]\s*(?:\\?[\"'])?(?!\*{4}|(?:null|None|true|false)\b)"
        r"([^\s\"',;&}\\]+)"), 2, name_group=1),
)
# A whole value of the form user:password@host[:port] (a `host_port` with credentials). Always
# matched whole (fullmatch): searched for, it would try every start of a long value, quadratic in its length.
# The password may hold `/` and a raw `@`: it runs to the last `@` before the host. (A `//` after the
# first `:` is a URL's, read by the URL rule.)
_USERINFO_VALUE = re.compile(r"[^\s:/@]+:(?!//)(\S+)@[^\s@/]+(?:[/?#]\S*)?")
_SPACE = re.compile(r"\s")
# A whole value in Oracle's user/password@host form (EZConnect): `scott/tiger@db:1521/ORCL`,
# `scott/tiger@//db:1521/ORCL`, `scott/"p@ss"@db/ORCL` (no spaces, even quoted). A port or a service
# must follow the host, so that `actions/checkout@v4` and `dbt-labs/dbt_utils@1.1.1` are no credentials.
_ORACLE_VALUE = re.compile(
    r"[A-Za-z][\w$#]*/(?:\"(?P<quoted>[^\"]+)\"|(?P<password>[^\s\"]+?))"  # user/password
    r"@(?://)?[\w.-]+(?::\d+(?:/[\w.$#-]+)?|/[\w.$#-]+)(?::\w+)?(?:/\w+)?")  # @host:port/service:server/instance


@dataclass(frozen=True)
class Secret:
    """A secret in a config: the field it is in, and the secret text itself."""

    field: str
    value: str


def find_secrets(document: Any) -> list[Secret]:
    """Every secret in a config document, by the field's name or inside its value."""
    found: list[Secret] = []
    for name, value in _leaves(document):
        text = _scalar_text(value)
        if not text.strip():
            continue
        if is_secret_field(name):
            found.append(Secret(name, text))
        else:
            found.extend(Secret(name, secret) for secret in secrets_in_value(text))
        # A document given as a JSON string (a GCP key file in `credentials_json`) holds secrets of its own.
        embedded = _embedded_document(text)
        if embedded is not None:
            try:
                found.extend(find_secrets(embedded))
            except RecursionError:  # nested too deep to be a key file; the field's own rule decided above
                pass
    return found


def secrets_in_value(text: str) -> list[str]:
    """The secrets inside one value (or one line of text)."""
    found = [text[start:end] for pattern in _SECRET_PATTERNS for start, end in pattern.spans(text)]
    whole = text.strip()
    # A value that is one URL is read as make_url reads it: its password may hold spaces and quotes too.
    scheme = _URL_SCHEME.match(whole)
    if scheme is not None:
        found += [whole[start:end] for start, end in _password_spans(whole[scheme.end():], scheme.end())]
    # Neither form holds a space; with one, each `@` would be tried to the end of the value (quadratic).
    if _SPACE.search(whole) is None:
        userinfo = _USERINFO_VALUE.fullmatch(whole)
        if userinfo is not None:
            found.append(userinfo.group(1))
        oracle = _ORACLE_VALUE.fullmatch(whole)
        if oracle is not None:
            found.append(oracle.group("quoted") or oracle.group("password"))
    return found


def secret_values(document: Any) -> set:
    """The texts to mask wherever they appear: the secrets of a config document, in every form they print in."""
    found = {variant for secret in find_secrets(document) for variant in _variants(secret.value)}
    return {value for value in found if len(value) >= _MIN_SECRET_LENGTH}


def _scalar_text(value: Any) -> str:
    # Numbers count (YAML reads an unquoted numeric password as one); booleans and nulls are no secrets.
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return ""
    return str(value)


def _embedded_document(text: str) -> Any:
    stripped = text.strip()
    if not (stripped[:1], stripped[-1:]) in (("{", "}"), ("[", "]")):
        return None
    try:
        return json.loads(stripped)
    except (ValueError, RecursionError):
        return None


def _leaves(document: Any, key: str = "", in_list: bool = False) -> Iterable[tuple]:
    """(name, scalar) pairs; a scalar is named by its key, or by what names it in the structure around it."""
    if isinstance(document, dict):
        entry_name = _entry_name(document)
        for child_key, child in document.items():
            name = str(child_key)
            if name.lower() in _VALUE_KEYS:
                name = entry_name or key or name
            yield from _leaves(child, name)
    elif isinstance(document, list):
        for index, child in enumerate(document):
            flag = _flag_name(document, index, in_list)
            yield from _leaves(child, flag or key, in_list=True)
    else:
        yield key, document


def _entry_name(entry: dict) -> str | None:
    """The secret name a {"name": ..., "value": ...} entry (a header, a parameter) gives its value."""
    for name_key, name in entry.items():
        if str(name_key).lower() in _ENTRY_NAME_KEYS and isinstance(name, str) and is_secret_field(name):
            return name
    return None


def _flag_name(items: list, index: int, in_list: bool) -> str | None:
    """The secret name the previous item gives this one: ["--password", X], or a [name, value] pair in a list."""
    if index == 0 or not isinstance(items[index - 1], str):
        return None
    previous = items[index - 1]
    flag = _FLAG.fullmatch(previous)
    if flag is not None:
        name = flag.group(1)
    elif in_list and len(items) == 2:  # headers as [["Authorization", "token X"], ...]
        name = previous
    else:
        return None
    return name if is_secret_field(name) else None


def _variants(secret: str) -> Iterable[str]:
    """The forms a secret can take in output: as is, escaped, URL-quoted, line by line, shortened."""
    secret = secret.strip()
    yield secret
    yield json.dumps(secret)[1:-1]
    yield repr(secret)[1:-1]
    yield quote(secret, safe="")
    yield unquote(secret)  # a URL's password as the driver got it from make_url
    # A multi-line secret (a PEM private key) is printed line by line.
    yield from (line.strip() for line in secret.splitlines())
    # pydantic echoes a long input as the first 25 and last 24 characters of its repr.
    shown = repr(secret)
    if len(shown) > _ECHO_LIMIT:
        yield shown[1:_ECHO_HEAD]
        yield shown[-_ECHO_TAIL:-1]


def _mask_patterns(text: str) -> str:
    for pattern in _SECRET_PATTERNS:
        spans = list(pattern.spans(text))
        if spans:
            text = _masked(text, spans)
    return text


def _masked(text: str, spans: list[tuple]) -> str:
    # Joined once: replacing span by span would copy a long line once per secret in it.
    pieces, done = [], 0
    for start, end in spans:
        if start >= done:
            pieces += [text[done:start], MASK]
            done = end
    pieces.append(text[done:])
    return "".join(pieces)


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
        if _ECHO in text and self._secrets:
            text = _mask_shortened_echoes(text, self._secrets)
        return _mask_patterns(text)


_ECHO = "input_value="
# A secret's head or tail shorter than this is left in a shortened echo: too short to tell from chance.
_MIN_ECHO_PIECE = 6


def _mask_shortened_echoes(text: str, secrets: tuple) -> str:
    """Mask the pieces of secrets in pydantic's `input_value=<head>...<tail>` echoes.

    A secret inside a longer input (`{'value': 'secret'}`) is cut anywhere, so its
    shortened forms cannot be listed in advance: the head may end with any start
    of the secret, and the tail begin with any end of it.
    """
    pieces, done = [], 0
    for echo in re.finditer(re.escape(_ECHO), text):
        cut = text.find("...", echo.end(), echo.end() + _ECHO_HEAD + 4)
        if cut < done or cut < 0:
            continue
        head_start, tail_end = cut, cut + 3
        for secret in secrets:
            head_start = min(head_start, cut - _common_edge(text[echo.end():cut], secret, at_end=True))
            tail = text[cut + 3:cut + 3 + _ECHO_TAIL]
            tail_end = max(tail_end, cut + 3 + _common_edge(tail, secret, at_end=False))
        if head_start < cut:
            pieces += [text[done:head_start], MASK]
            done = cut
        if tail_end > cut + 3:
            pieces += [text[done:cut + 3], MASK]
            done = tail_end
    pieces.append(text[done:])
    return "".join(pieces)


def _common_edge(window: str, secret: str, at_end: bool) -> int:
    """The longest start of `secret` ending `window` (at_end), or end of `secret` starting it."""
    for size in range(min(len(window), len(secret)), _MIN_ECHO_PIECE - 1, -1):
        if (window.endswith(secret[:size]) if at_end else window.startswith(secret[-size:])):
            return size
    return 0


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
