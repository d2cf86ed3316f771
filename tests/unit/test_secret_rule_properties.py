"""The secret rule against generated input: URLs with any password, field names in any casing.

SQLAlchemy's `make_url` is the oracle for URLs: whatever it reads as the password is what a
connector sends to its database, so the rule must find it and the masked output must not hold it.
"""

from __future__ import annotations

import json
import re
import string
from urllib.parse import unquote

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import make_url

from ingestion_factory.model.runtime_modules import runtime_redaction

MASK = runtime_redaction.MASK
# No example database: the runs stay the same size and write nothing into the checkout.
FAST = settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.filter_too_much])

SCHEMES = st.sampled_from(["postgresql", "postgresql+psycopg2", "mysql+pymysql", "oracle+oracledb", "mssql+pyodbc",
                           "snowflake", "trino", "clickhouse+http", "redshift+psycopg2"])
USERS = st.text(string.ascii_letters + string.digits + "._-", max_size=12)
# The characters URLs trip over, between runs of any other (unicode, spaces, quotes, control characters).
# Drawn as pieces: a text over one alphabet of both would hardly ever hold a `/` or an `@`.
URL_SPECIALS = st.sampled_from(list("/#?@:%=&;!$+*~'\" \\[]{}") + ["%40", "%2F", "//", "@@"])
ANY_CHARACTERS = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), min_size=1, max_size=4)
PASSWORDS = st.lists(st.one_of(URL_SPECIALS, ANY_CHARACTERS), min_size=1, max_size=12).map("".join)
HOSTS = st.from_regex(r"[a-z][a-z0-9-]{0,10}(\.[a-z]{2,5})?(:[0-9]{2,5})?", fullmatch=True)
DATABASES = st.from_regex(r"[a-z_]{0,12}", fullmatch=True)
QUERIES = st.sampled_from(["", "?sslmode=require", "?charset=utf8mb4&connect_timeout=10"])


def _parsed_password(url: str):
    try:
        return make_url(url).password
    except Exception:  # noqa: BLE001 - make_url rejects what it cannot read (a port that is no number, ...)
        return None


@FAST
@given(SCHEMES, USERS, PASSWORDS, HOSTS, DATABASES, QUERIES)
def test_whatever_make_url_reads_as_the_password_is_found_and_masked(scheme, user, password, host, database, query):
    url = f"{scheme}://{user}:{password}@{host}/{database}{query}"
    parsed = _parsed_password(url)
    assume(parsed)
    # make_url's password starts after the user's `:` and ends at the first `@`, then is unquoted.
    start = len(f"{scheme}://{user}:")
    raw = url[start:url.index("@", start)]
    assert unquote(raw) == parsed

    document = {"source": {"type": "postgres", "serviceConnection": {"sqlalchemy_uri": url}}}
    found = {secret.value for secret in runtime_redaction.find_secrets(document)}
    assert raw in found

    if len(parsed.strip()) >= 4:  # shorter known values are not masked wherever they appear (see secret_values)
        redactor = runtime_redaction.Redactor()
        redactor.add_secrets_from(document)
        for line in (url, f"connecting to {url}", json.dumps(document), repr(document), f"password is {parsed}"):
            assert parsed not in redactor.redact(line).replace(MASK, "\0"), line


@FAST
@given(SCHEMES, USERS, PASSWORDS, HOSTS, DATABASES, QUERIES)
def test_a_url_in_a_log_line_has_its_password_masked_without_the_config(scheme, user, password, host, database,
                                                                         query):
    """Without knowing the config: the URL pattern alone masks the whole password in the URL as printed."""
    assume(not re.search(r"[\s\"']", password))  # in running text a URL ends at a space or a quote
    url = f"{scheme}://{user}:{password}@{host}/{database}{query}"
    assume(_parsed_password(url))
    masked = runtime_redaction.Redactor().redact(url)
    assert make_url(masked).password == MASK, masked


@FAST
@given(st.sampled_from(["https", "ssh", "git+https"]), USERS, PASSWORDS,
       st.from_regex(r"[a-z]{2,10}\.(com|org|net)(:[0-9]{2,5})?", fullmatch=True))
def test_a_url_without_userinfo_keeps_no_part_of_the_password(scheme, user, password, host):
    url = f"{scheme}://{user}:{password}@{host}/acme/factory.git"
    assume(_parsed_password(url))
    stripped = runtime_redaction.url_without_userinfo(url)
    assert stripped.startswith(f"{scheme}://") and stripped.endswith("/acme/factory.git")
    try:
        parsed = make_url(stripped)
    except Exception:  # noqa: BLE001 - what is left may be no URL make_url reads; it holds no userinfo either way
        parsed = None
    assert parsed is None or (parsed.password is None and parsed.username is None), stripped


def _name(words, style):
    """The words written as one field name: snake_case, kebab-case, dotted, camelCase, PascalCase, ..."""
    if style == "camel":
        return words[0].lower() + "".join(word.capitalize() for word in words[1:])
    if style == "pascal":
        return "".join(word.capitalize() for word in words)
    if style == "upper_snake":
        return "_".join(words).upper()
    if style == "joined":
        return "".join(words).lower()
    if style == "upper_joined":
        return "".join(words).upper()
    separator = {"snake": "_", "kebab": "-", "dotted": ".", "header": "-"}[style]
    written = [word.capitalize() for word in words] if style == "header" else words
    return separator.join(written)


STYLES = st.sampled_from(["snake", "kebab", "dotted", "header", "camel", "pascal", "upper_snake", "joined",
                          "upper_joined"])
PREFIXES = st.lists(st.sampled_from(["db", "source", "kafka", "my", "azure", "ssl", "snowflake", "client"]),
                    max_size=2)
SECRET_NAMES = st.sampled_from([
    ["password"], ["pass", "word"], ["passphrase"], ["secret"], ["client", "secret"], ["access", "token"],
    ["jwt", "token"], ["api", "key"], ["private", "key"], ["ssh", "key"], ["auth", "key"], ["storage", "key"],
    ["hmac", "key"], ["account", "key"], ["keystore", "key"], ["connection", "string"], ["credentials"],
])
ORDINARY_NAMES = st.sampled_from([
    ["primary", "key"], ["partition", "key"], ["sort", "key"], ["routing", "key"], ["foreign", "key"],
    ["object", "key"], ["keyspace"], ["key"], ["host", "port"], ["database", "name"], ["database"],
    ["schema", "filter", "pattern"], ["table", "filter", "pattern"], ["username"], ["cookie", "domain"],
    ["include", "views"],
])
POINTERS = st.sampled_from([["file"], ["path"], ["url"], ["type"], ["name"], ["provider"], ["location"]])


@FAST
@given(PREFIXES, SECRET_NAMES, STYLES)
def test_a_secret_name_counts_in_any_casing_and_separator(prefix, words, style):
    assert runtime_redaction.is_secret_field(_name(prefix + words, style))


@FAST
@given(PREFIXES, SECRET_NAMES, POINTERS, STYLES)
def test_a_name_that_points_at_a_secret_is_no_secret(prefix, words, pointer, style):
    assert not runtime_redaction.is_secret_field(_name(prefix + words + pointer, style))


# Prefixes that make no secret of a following `key` (`client` would: `clientKey` is a TLS client key).
NEUTRAL_PREFIXES = st.lists(st.sampled_from(["db", "source", "kafka", "my", "azure", "snowflake"]), max_size=2)


@FAST
@given(NEUTRAL_PREFIXES, ORDINARY_NAMES, STYLES)
def test_ordinary_names_are_no_secret_in_any_casing(prefix, words, style):
    assert not runtime_redaction.is_secret_field(_name(prefix + words, style))


@FAST
@given(PREFIXES, st.sampled_from([["cookie"], ["set", "cookie"], ["session", "cookie"]]), STYLES)
def test_a_cookie_is_a_secret_in_any_casing(prefix, words, style):
    assert runtime_redaction.is_secret_field(_name(prefix + words, style))
