"""One rule for what a secret is, held to one table.

The runtime masks what its rule finds in a config (runtime_redaction), and `inv run-local`
sends any config in which that rule finds something as a mounted file instead of env
`config`, which `docker inspect` shows (run_config). Both are checked against the same rows.
"""

from __future__ import annotations

import json

import pytest

from ingestion_factory.model.runtime_modules import runtime_redaction
from ingestion_factory.workflows import run_config

# Every secret below contains this marker (or is the whole value), so a leak is easy to spot.
MARK = "S3cret"
JWT = f"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJpbmdlc3QifQ.{MARK}-signature"
PEM = f"-----BEGIN PRIVATE KEY-----\nMIIEv{MARK}QIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----"

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
    ("options", f"sslmode=require password={MARK}-pw", True),
    ("jdbc_url", f"jdbc:mysql://db/shop?user=ingest&password={MARK}-pw", True),
    ("Authorization", f"Bearer abcdefgh{MARK}", True),
    ("description", f"signed {JWT}", True),
    ("description", "orders placed in the shop", False),
]


def _hidden(value) -> str:
    """What must not appear in the output: the marked part, or the whole value."""
    return MARK if MARK in str(value) else str(value)


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
    for text in (value if isinstance(value, list) else [value]):
        line = f"connecting with {text}"
        if secret:
            assert _hidden(text) not in redactor.redact(line)
        else:
            assert redactor.redact(line) == line
