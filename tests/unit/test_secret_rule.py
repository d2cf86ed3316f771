"""One rule for what a secret is, held to one table.

The runtime masks what its rule finds in a config (runtime_redaction), and `inv run-local`
sends any config in which that rule finds something as a mounted file instead of env
`config`, which `docker inspect` shows (run_config). Both are checked against the same rows.
"""

from __future__ import annotations

import base64
import json
import time

import pytest

from ingestion_factory.model.runtime_modules import runtime_redaction
from ingestion_factory.workflows import run_config

# Every secret below contains this marker (or is the whole value), so a leak is easy to spot.
MARK = "S3cret"
JWT = f"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJpbmdlc3QifQ.{MARK}-signature"
PEM = f"-----BEGIN PRIVATE KEY-----\nMIIEv{MARK}QIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----"
# A GCP service-account key file pasted into a config as one JSON string.
GCP_KEY_FILE = json.dumps({"type": "service_account", "project_id": "shop", "private_key_id": f"id-{MARK}",
                           "private_key": PEM, "client_email": "ingest@shop.iam.gserviceaccount.com"})
JAAS = ('org.apache.kafka.common.security.plain.PlainLoginModule required username="ingest" '
        f'password="{MARK}-pw";')


def _basic(credentials: str) -> str:
    return base64.b64encode(credentials.encode()).decode()


SECRET_TABLE = [
    # name, value, secret?
    ("password", f"hunter2-{MARK}", True),
    ("dbPassword", f"pw-{MARK}", True),
    ("PGPASSWORD", f"pw-{MARK}", True),
    ("mysql_pwd", f"pw-{MARK}", True),
    ("passphrase", f"words-{MARK}", True),
    ("passwords", [f"one-{MARK}", f"two-{MARK}"], True),
    ("password", 12345678, True),  # YAML reads an unquoted numeric password as a number
    ("password", "", False),  # nothing to hide
    ("password", None, False),
    ("passwordFile", "/run/secrets/pg", False),  # points at the secret
    ("jwtToken", JWT, True),
    ("jwt", JWT, True),
    ("refresh_token", f"rt-{MARK}", True),
    ("sas_token", f"sv=2020&sig={MARK}", True),
    ("tokenType", "Bearer", False),
    ("tokenUrl", "https://idp.example.com/token", False),
    ("token_expiry", "3600", False),
    ("tokenizer", "whitespace", False),
    ("api_key", f"k-{MARK}", True),
    ("apiKey", f"k-{MARK}", True),
    ("X-API-KEY", f"k-{MARK}", True),
    ("privateKey", PEM, True),
    ("private_key_id", f"id-{MARK}", True),
    ("sslKey", PEM, True),
    ("sslKeyPath", "/certs/client.key", False),
    ("awsSecretAccessKey", f"aws-{MARK}", True),
    ("awsAccessKeyId", f"AKIA{MARK}", True),
    ("awsRegion", "eu-west-1", False),
    ("clientSecret", f"cs-{MARK}", True),
    ("client-secret", f"cs-{MARK}", True),
    ("secretsManagerProvider", "aws", False),
    ("credentials", f"gcp-{MARK}", True),
    ("credentialsPath", "/run/secrets/gcp.json", False),
    ("connectionString", f"DefaultEndpointsProtocol=https;AccountName=a;AccountKey={MARK}==", True),
    ("accountKey", f"ak-{MARK}", True),
    ("keyspace", "shop", False),
    ("primaryKey", "order_id", False),
    ("key", "team", False),
    ("username", "ingest", False),
    ("include_views", True, False),
    ("port", 5432, False),
    # Secrets in values, whatever the field is called.
    ("sqlalchemy_uri", f"postgresql://ingest:{MARK}-pw@db.example.com:5432/shop", True),
    ("sqlalchemy_uri", "postgresql://ingest@db.example.com:5432/shop", False),
    ("connect_uri", f"mysql+pymysql://root:{MARK}%40x@localhost/shop", True),
    ("connect_uri", "http://localhost:8585/api", False),
    ("host_port", f"ingest:{MARK}-pw@localhost:5432", True),
    ("host_port", "localhost:5432", False),
    ("hostPort", "ingest@localhost:5432", False),
    # user:password@host counts as the whole value only; inside text it needs a scheme (the URL rule above).
    ("schedule", "shifts 09:00@berlin and 17:00@london", False),
    ("host_port", f"  ingest:{MARK}-pw@localhost:5432\n", True),
    ("options", f"sslmode=require password={MARK}-pw", True),
    ("jdbc_url", f"jdbc:mysql://db/shop?user=ingest&password={MARK}-pw", True),
    ("Authorization", f"Bearer abcdefgh{MARK}", True),
    ("description", f"signed {JWT}", True),
    ("description", "orders placed in the shop", False),
    # Fields of real connector configs.
    ("passPhrase", f"words-{MARK}", True),  # Snowflake's private key passphrase
    ("basic.auth.user.info", f"registry:{MARK}-pw", True),  # Kafka schema registry
    ("keytab", f"BQIAAABHAAEAC0VYQU1QTEUuQ09N{MARK}AAAAAQ==", True),  # Kerberos keytab, base64
    ("keytabFile", "/etc/krb5.keytab", False),
    ("tls.key", PEM, True),
    ("tls.crt", "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\n-----END CERTIFICATE-----", False),
    ("service_account_info", GCP_KEY_FILE, True),
    ("http_auth", f"elastic:{MARK}-pw", True),  # Elasticsearch
    ("databricksPAT", f"dapi{MARK}0123456789abcdef", True),
    ("password", {"value": f"pw-{MARK}"}, True),
    ("args", ["--password", f"pw-{MARK}"], True),
    ("command", ["ingest", "--user", "ingest", "--password", f"pw-{MARK}", "--verbose"], True),
    ("args", ["--password-file", "/run/secrets/pw", "--user", "ingest"], False),
    ("headers", [{"name": "X-API-Key", "value": f"k-{MARK}"}, {"name": "Accept", "value": "text/plain"}], True),
    ("headers", [{"name": "Accept", "value": "application/json"}], False),
    ("headers", [["Authorization", f"token abc{MARK}123"], ["Accept", "text/plain"]], True),
    ("exclude_columns", ["password", "ssn"], False),  # names of columns, not a name/value pair
    ("sasl.jaas.config", JAAS, True),
    ("sasl.mechanism", "PLAIN", False),
    ("Authorization", f"Basic {_basic('ingest:' + MARK)}", True),
    # Whatever SQLAlchemy's make_url reads as the password: it may hold `/`, `#`, `?` or a raw `@`.
    ("sqlalchemy_uri", f"postgresql://etl:Pa/ss-{MARK}@db/x", True),
    ("sqlalchemy_uri", f"postgresql://etl:Pa#ss-{MARK}@db/x", True),
    ("sqlalchemy_uri", f"mysql+pymysql://etl:Pa?ss-{MARK}@db:3306/x?charset=utf8", True),
    ("sqlalchemy_uri", f"postgresql://etl:p@ss-{MARK}@db/x", True),  # make_url: "p", the host "ss-...@db"
    ("sqlalchemy_uri", f"postgresql://etl:pa ss-{MARK}@db/x", True),
    ("host_port", f"etl:Pa/ss-{MARK}@db:5432", True),
    # Oracle's user/password@host form (EZConnect).
    ("dsn", f"scott/Tiger{MARK}@db:1521/ORCL", True),
    ("dsn", f"scott/Tiger{MARK}@//db.example.com:1521/ORCL", True),
    ("dsn", f'scott/"p@ss{MARK}"@db/ORCL', True),
    ("args", ["sqlplus", "-S", f"scott/Tiger{MARK}@db:1521/ORCL"], True),
    ("dbt_package", "dbt-labs/dbt_utils@1.1.1", False),
    ("action", "actions/checkout@v4", False),
    # Keys by their names, snake_case and camelCase; Kafka's key without a PEM header.
    ("ssh_key", f"b3BlbnNzaC1rZXktdjEAAAAA{MARK}", True),
    ("sshKey", f"b3BlbnNzaC1rZXktdjEAAAAA{MARK}", True),
    ("authKey", f"ak-{MARK}", True),
    ("storageKey", f"sk-{MARK}==", True),
    ("hmac_key", f"hk-{MARK}", True),
    ("ssl.keystore.key", f"MIIEvQIBADANBgkqhkiG9w0B{MARK}", True),
    ("Cookie", f"session={MARK}; theme=dark", True),
    ("headers", {"Cookie": f"session={MARK}; theme=dark", "Accept": "text/plain"}, True),
    ("headers", [{"name": "Cookie", "value": f"session={MARK}"}], True),
    ("extra_headers", f"Cookie: session={MARK}; theme=dark", True),
    # Ordinary config that only looks near a secret.
    ("hostPort", "db.example.com:5432", False),
    ("database", "shop", False),
    ("databaseName", "orders_2024", False),
    ("partitionKey", "customer_id", False),
    ("sortKey", "created_at", False),
    ("routingKey", "orders.created", False),
    ("objectKey", "exports/2024/orders.csv", False),
    ("foreign_key", "customer_id", False),
    ("sshKeyFile", "/home/etl/.ssh/id_ed25519", False),
    ("ssh_key_path", "/home/etl/.ssh/id_ed25519", False),
    ("ssl.keystore.location", "/certs/keystore.jks", False),
    ("ssl.keystore.type", "PEM", False),
    ("authType", "basic", False),
    ("cookieName", "session", False),
    ("schemaFilterPattern", {"includes": ["^public$", "sales.*"], "excludes": ["^pg_.*"]}, False),
    ("url", "https://api.example.com/v1/users/me@example.com", False),
    ("url", "https://etl@api.example.com:8443/v1", False),
]


def _hidden(value) -> str:
    """What must not appear in the output: the marked part, or the whole value."""
    return MARK if MARK in str(value) else str(value)


def _printed(document, value) -> list:
    """The ways a config's values reach a log: as is, element by element, as JSON, as a Python repr."""
    items = value if isinstance(value, list) else []
    return [f"connecting with {value}", *(f"connecting with {item}" for item in items), json.dumps(document),
            repr(document)]


@pytest.mark.parametrize("name, value, secret", SECRET_TABLE, ids=lambda item: repr(item)[:30])
def test_one_rule_decides_what_is_masked_and_what_travels_as_a_file(tmp_path, name, value, secret):
    document = {"source": {"type": "postgres", "config": {name: value}}}

    found = runtime_redaction.find_secrets(document)
    assert bool(found) is secret, found

    path = tmp_path / "workflow.json"
    path.write_text(json.dumps(document))
    transport = run_config.load(path, env={}).transport
    assert transport == (run_config.FILE_TRANSPORT if secret else run_config.ENV_TRANSPORT)

    redactor = runtime_redaction.Redactor()
    redactor.add_secrets_from(document)
    for line in _printed(document, value):
        if secret:
            assert _hidden(value) not in redactor.redact(line)
        else:
            assert redactor.redact(line) == line


def test_a_100_kib_value_is_checked_in_linear_time():
    """The whole-value rule is anchored at both ends (fullmatch): searching for it at every offset of a long
    value without a colon is quadratic (about a minute for 100 KiB), where one anchored try takes milliseconds."""
    import time

    value = "0123456789abcdef" * 6400  # 100 KiB: a certificate or a blob in one config field
    started = time.monotonic()
    assert runtime_redaction.find_secrets({"source": {"config": {"caCertificate": value, "sslKey": value}}}) == [
        runtime_redaction.Secret("sslKey", value)]
    assert runtime_redaction.secrets_in_value(value) == []
    assert time.monotonic() - started < 5  # generous: the anchored rule takes ~0.1 s on a loaded machine


LONG_SECRET = f"{MARK}-0123456789abcdefghijklmnopqrstuvwxyz-ABCDEFGHIJKLMNOPQRSTUVWXYZ"

# Log lines with a secret the redactor knows nothing about (no config): what must not survive.
LOG_TABLE = [
    (f"GET /api Authorization: Basic {_basic('ingest:' + MARK)}", _basic("ingest:" + MARK)),
    (f"headers={{'Authorization': 'Basic {_basic('ingest:' + MARK)}'}}", _basic("ingest:" + MARK)),
    (f"request failed, sent basic {_basic('ingest:' + MARK)}", _basic("ingest:" + MARK)),
    (f"Authorization: token ghp_{MARK}0123456789", MARK),
    (f"using token ghp_{MARK}0123456789abcdef", MARK),
    (f"sasl.jaas.config={JAAS} sasl.mechanism=PLAIN", "PlainLoginModule"),
    (json.dumps({"sasl.jaas.config": JAAS}), "PlainLoginModule"),
    (f"running ingest --user ingest --password {MARK}-pw --verbose", MARK),
    (f"argv: ['ingest', '--password', '{MARK}-pw']", MARK),
    (f"argv: ingest --password={MARK}-pw", MARK),
    (f"basic.auth.user.info=registry:{MARK}-pw", MARK),
    (f"http_auth: elastic:{MARK}-pw", MARK),
    (f"ssl.keystore.password={MARK}-pw", MARK),
    (f"key: {json.dumps(PEM)}", MARK),
    (f"credentials_json={json.dumps(GCP_KEY_FILE)}", MARK),
    (f"connecting to postgresql://etl:Pa/ss-{MARK}@db/x", MARK),
    (f"engine: mysql://etl:Pa#ss-{MARK}@db/x failed", MARK),
    (f"engine: mysql://etl:p@ss-{MARK}@db/x failed", MARK),
    (f"Cookie: session={MARK}; theme=dark", MARK),
    (f"Set-Cookie: session={MARK}; Path=/; HttpOnly", MARK),
    (f"headers={{'Cookie': 'session={MARK}; theme=dark'}}", MARK),
    (f"ssl.keystore.key={MARK}abc", MARK),
    (f"connecting with ssh_key={MARK}abc", MARK),
]
CLEAN_LINES = [
    "basic authentication failed for user ingest",
    "token validation failed, retrying",
    "running ingest --password-file /run/secrets/pw --verbose",
    "sasl.mechanism=PLAIN security.protocol=SASL_SSL",
    "-----BEGIN CERTIFICATE-----",
    "GET http://localhost:8585/api/v1/services?limit=10",
    "cookie consent banner disabled",
    "partitionKey=customer_id sortKey=created_at",
]


@pytest.mark.parametrize("line, leaked", LOG_TABLE, ids=lambda item: repr(item)[:40])
def test_log_lines_are_masked_without_knowing_the_config(line, leaked):
    assert leaked not in runtime_redaction.Redactor().redact(line)


@pytest.mark.parametrize("line", CLEAN_LINES)
def test_lines_without_secrets_are_left_alone(line):
    assert runtime_redaction.Redactor().redact(line) == line


def test_a_jaas_config_is_masked_whole_not_up_to_its_first_space():
    redacted = runtime_redaction.Redactor().redact(f"sasl.jaas.config={JAAS} next=1")
    assert redacted == f"sasl.jaas.config={runtime_redaction.MASK} next=1"


def test_pydantics_shortened_echo_of_a_secret_is_masked():
    redactor = runtime_redaction.Redactor()
    redactor.add_secrets_from({"config": {"password": LONG_SECRET}})
    # How pydantic 2 prints an input it rejects: its repr's first 25 and last 24 characters.
    shown = repr(LONG_SECRET)
    echo = (f"1 validation error for Config\nport\n  Input should be a valid integer "
            f"[type=int_parsing, input_value={shown[:25]}...{shown[-24:]}, input_type=str]")
    redacted = redactor.redact(echo)
    assert MARK not in redacted and LONG_SECRET[-20:] not in redacted


def test_pieces_of_a_secret_in_a_shortened_echo_of_a_larger_input_are_masked():
    redactor = runtime_redaction.Redactor()
    redactor.add_secrets_from({"config": {"password": LONG_SECRET}})
    shown = repr({"value": LONG_SECRET})
    echo = f"Input should be a valid string [type=string_type, input_value={shown[:25]}...{shown[-24:]}, input_type=dict]"
    redacted = redactor.redact(echo)
    assert LONG_SECRET[:8] not in redacted and LONG_SECRET[-8:] not in redacted
    assert redacted.startswith("Input should be a valid string [type=string_type, input_value={'value': '********...")


# Long values of the characters the patterns look for. Each rule must stay linear in the length of what
# it reads (a name matched whole, patterns that start only where their run starts): a search where a
# fullmatch belongs, or an unanchored repeat, turns 100 KiB into minutes.
LONG_INPUTS = ["a", "a-", "a:a@", "a=b ", "x://a:", "eyJaaaaa.", "'--a', ", "basic ", "token 1", "jaas.config=",
               "input_value=S3cret...", "x://a:@", "x://@", "x://a:b/", "cookie: ", "a/b@c:1/", "@b/"]


@pytest.mark.parametrize("unit", LONG_INPUTS)
def test_a_100_kib_value_or_name_stays_fast(unit):
    text = (unit * (100 * 1024 // len(unit) + 1))[:100 * 1024]
    redactor = runtime_redaction.Redactor()
    redactor.add_secrets_from({"password": LONG_SECRET})
    started = time.perf_counter()
    runtime_redaction.find_secrets({"host_port": text, text: "x"})
    redactor.redact(text)
    assert time.perf_counter() - started < 2.0


def test_a_long_credential_like_value_ending_in_a_space_stays_fast():
    """`user:password@host` may hold many `@`: with a space at the end, each would be tried to the end (minutes)."""
    value = "ingest:" + "@b/" * (100 * 1024 // 3) + " x"
    started = time.perf_counter()
    runtime_redaction.find_secrets({"host_port": value})
    assert time.perf_counter() - started < 2.0
