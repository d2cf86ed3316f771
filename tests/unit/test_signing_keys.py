"""The key files themselves: how the private key is encrypted, who may read it, and files of several trusted keys.

The encryption is read back from the PEM's DER with a walk written here (not with the code that wrote it),
so the test says what any reader of the file would find.
"""

from __future__ import annotations

import base64
import os
import stat

import pytest

from ingestion_factory import settings as settings_mod
from ingestion_factory.cli import trust_commands
from ingestion_factory.engine import signing
from ingestion_factory.errors import ConfigError

PASSPHRASE = b"correct horse battery"
PBES2, PBKDF2 = "1.2.840.113549.1.5.13", "1.2.840.113549.1.5.12"
HMAC_SHA256, AES256_CBC = "1.2.840.113549.2.9", "2.16.840.1.101.3.4.1.42"


# --- a minimal DER reader ---------------------------------------------------------------------------


def der_elements(data: bytes) -> list[tuple[int, bytes]]:
    """The (tag, content) elements one after the other in `data` (definite lengths only, as DER has)."""
    found, at = [], 0
    while at < len(data):
        tag, size = data[at], data[at + 1]
        at += 2
        if size & 0x80:
            octets = size & 0x7F
            size = int.from_bytes(data[at:at + octets], "big")
            at += octets
        found.append((tag, data[at:at + size]))
        at += size
    return found


def oid(content: bytes) -> str:
    first, rest = divmod(content[0], 40)
    arcs, value = [first, rest], 0
    for byte in content[1:]:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(value)
            value = 0
    return ".".join(map(str, arcs))


def pem_der(pem: bytes) -> bytes:
    lines = pem.decode().strip().splitlines()
    return base64.b64decode("".join(lines[1:-1]))


def encryption_of(pem: bytes) -> dict:
    """What an EncryptedPrivateKeyInfo says of its encryption: scheme, KDF, rounds, PRF, cipher."""
    [(_, info)] = der_elements(pem_der(pem))
    (_, algorithm), _ciphertext = der_elements(info)
    (_, scheme), (_, parameters) = der_elements(algorithm)
    (_, kdf), (_, cipher) = der_elements(parameters)
    (_, kdf_oid), (_, kdf_parameters) = der_elements(kdf)
    pbkdf2 = der_elements(kdf_parameters)  # salt, rounds, [key length], [prf]
    prf = [oid(der_elements(content)[0][1]) for tag, content in pbkdf2[2:] if tag == 0x30]
    return {"scheme": oid(scheme), "kdf": oid(kdf_oid), "salt": len(pbkdf2[0][1]),
            "rounds": int.from_bytes(pbkdf2[1][1], "big"), "prf": prf[0] if prf else "hmacWithSHA1",
            "cipher": oid(der_elements(cipher)[0][1])}


# --- the private key's encryption -------------------------------------------------------------------


def test_the_private_key_is_encrypted_with_600000_rounds_of_pbkdf2_sha256_and_aes_256(tmp_path):
    private, _ = signing.write_key_pair(tmp_path, PASSPHRASE)
    pem = private.read_bytes()
    assert pem.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert encryption_of(pem) == {"scheme": PBES2, "kdf": PBKDF2, "salt": 16, "rounds": 600_000,
                                  "prf": HMAC_SHA256, "cipher": AES256_CBC}
    assert signing.load_signer(private, PASSPHRASE).public.keyid  # and the key still opens
    with pytest.raises(ConfigError, match="wrong passphrase"):
        signing.load_signer(private, b"another passphrase")


def test_two_keys_get_their_own_salt():
    first, _ = signing.generate(PASSPHRASE)
    second, _ = signing.generate(PASSPHRASE)
    assert pem_der(first)[:40] != pem_der(second)[:40]  # salt and IV are random: no two files alike


def test_a_key_written_with_the_old_default_still_opens(tmp_path):
    """Keys from before this change were encrypted by cryptography's BestAvailableEncryption (2,048 rounds)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    old = tmp_path / "old.key"
    old.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.BestAvailableEncryption(PASSPHRASE)))
    old.chmod(0o600)
    assert encryption_of(old.read_bytes())["rounds"] < 600_000
    signer = signing.load_signer(old, PASSPHRASE)
    assert signer.public.key.public_numbers() == key.public_key().public_numbers()


# --- who may read the private key -------------------------------------------------------------------


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660], ids=lambda mode: f"{mode:04o}")
def test_a_private_key_others_may_read_is_refused_with_the_fix(tmp_path, mode):
    private, _ = signing.write_key_pair(tmp_path, PASSPHRASE)
    private.chmod(mode)
    with pytest.raises(ConfigError) as refused:
        signing.load_signer(private, PASSPHRASE)
    assert refused.value.exit_code == 2
    assert str(private) in refused.value.message and f"{mode:04o}" in refused.value.message
    assert refused.value.hint == f"chmod 600 {private}"
    private.chmod(0o600)
    signing.load_signer(private, PASSPHRASE)  # the fix the hint gives is enough


def test_inv_keys_generate_writes_the_private_key_0600_whatever_the_umask(project, tmp_path, monkeypatch):
    monkeypatch.setenv(signing.ENV_PASSPHRASE, PASSPHRASE.decode())
    settings = settings_mod.load(settings_mod.pyproject_defaults(project), project)
    previous = os.umask(0)
    try:
        assert trust_commands.keys(settings, "generate", output=str(tmp_path / "keys")) == 0
    finally:
        os.umask(previous)
    private = tmp_path / "keys" / signing.PRIVATE_NAME
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "keys" / signing.PUBLIC_NAME).stat().st_mode) & 0o044  # the .pub is public
    signing.load_signer(private, PASSPHRASE)
    # --force over an existing pair leaves it 0600 too (the new file replaces the old one whole).
    assert trust_commands.keys(settings, "generate", output=str(tmp_path / "keys"), force=True) == 0
    assert stat.S_IMODE(private.stat().st_mode) == 0o600


# --- a trusted-keys file of several keys ------------------------------------------------------------


def test_every_key_in_a_trusted_keys_file_is_trusted(tmp_path):
    first, second = signing.generate(PASSPHRASE), signing.generate(PASSPHRASE)
    both = tmp_path / "team.pub"
    both.write_bytes(b"# the release keys\n" + first[1] + b"\n" + second[1])
    keys = signing.load_public_keys([both])
    assert [key.source for key in keys] == [f"{both} (key 1 of 2)", f"{both} (key 2 of 2)"]
    for private_pem, _ in (first, second):
        (tmp_path / "signing.key").write_bytes(private_pem)
        (tmp_path / "signing.key").chmod(0o600)
        signer = signing.load_signer(tmp_path / "signing.key", PASSPHRASE)
        signature = signer.sign(b"data")
        assert [key.keyid for key in keys if key.verify(signature, b"data")] == [signer.public.keyid]
    # A key listed twice (the file, and the one key again) is trusted once.
    (tmp_path / "second.pub").write_bytes(second[1])
    assert len(signing.load_public_keys([both, tmp_path / "second.pub"])) == 2


def test_a_trusted_keys_file_with_a_block_that_is_no_public_key_is_refused(tmp_path):
    _, public = signing.generate(PASSPHRASE)
    mixed = tmp_path / "mixed.pub"
    mixed.write_bytes(public + b"-----BEGIN CERTIFICATE-----\nTUlJQg==\n-----END CERTIFICATE-----\n")
    with pytest.raises(ConfigError, match=f"the trusted key {mixed} \\(key 2 of 2\\) is not a PEM public key") \
            as refused:
        signing.load_public_keys([mixed])
    assert refused.value.exit_code == 2
    (tmp_path / "empty.pub").write_text("nothing here\n")
    with pytest.raises(ConfigError, match="is not a PEM public key"):
        signing.load_public_keys([tmp_path / "empty.pub"])
    two = tmp_path / "two.pub"
    two.write_bytes(public + public)
    with pytest.raises(ConfigError, match="holds 2 public keys, not one"):
        signing.load_public_key(two)  # where one key is meant (the .pub `inv keys generate` wrote)
