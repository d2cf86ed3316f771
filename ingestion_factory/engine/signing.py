"""Keys: ECDSA P-256 key pairs in PEM (the private key encrypted), signing and checking signatures.

All cryptography is the `cryptography` package's; signatures are ECDSA over SHA-256, DER-encoded,
as cosign makes and checks them with a key file. The private key's encryption (PKCS#8 PBES2) is put
together here, because `cryptography` encrypts PKCS#8 with a fixed 2,048 PBKDF2 rounds only.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ConfigError
from ..files import write_atomically

if TYPE_CHECKING:  # for annotations only: cryptography is imported where it is used (it is slow to load)
    from cryptography.hazmat.primitives.asymmetric import ec

ENV_PASSPHRASE = "FACTORY_SIGNING_PASSPHRASE"
PRIVATE_NAME = "factory-signing.key"
PUBLIC_NAME = "factory-signing.pub"
MIN_PASSPHRASE = 8
# PBKDF2-HMAC-SHA256 rounds that turn the passphrase into the private key's AES key (OWASP's advice
# since 2023); a guess at the passphrase of a stolen key file costs this many HMACs.
KDF_ROUNDS = 600_000
PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----.*?-----END \1-----", re.DOTALL)


def read_passphrase(passphrase_file: str | None = None, environ: Mapping[str, str] | None = None) -> bytes:
    """The passphrase from --passphrase-file, else FACTORY_SIGNING_PASSPHRASE; never a flag's value."""
    env = os.environ if environ is None else environ
    if passphrase_file:
        try:
            text = Path(passphrase_file).expanduser().read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read the passphrase file {passphrase_file} ({exc.strerror})") from None
        value = text.rstrip("\r\n")
        where = f"the passphrase file {passphrase_file}"
    else:
        value = env.get(ENV_PASSPHRASE, "")
        where = ENV_PASSPHRASE
        if not value:
            raise ConfigError("the signing key's passphrase is not given",
                              f"set {ENV_PASSPHRASE}, or pass --passphrase-file FILE")
    if len(value) < MIN_PASSPHRASE:
        raise ConfigError(f"{where} holds a passphrase shorter than {MIN_PASSPHRASE} characters")
    return value.encode()


def key_id(public_der: bytes) -> str:
    """A short stable name for a public key: sha256 of its DER SubjectPublicKeyInfo."""
    return hashlib.sha256(public_der).hexdigest()


@dataclass(frozen=True)
class PublicKey:
    key: ec.EllipticCurvePublicKey = field(repr=False)
    source: str  # the file it came from, for messages
    keyid: str

    def verify(self, signature: bytes, data: bytes) -> bool:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec

        try:
            self.key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
        except (InvalidSignature, ValueError):
            return False
        return True


@dataclass(frozen=True)
class Signer:
    key: ec.EllipticCurvePrivateKey = field(repr=False)
    public: PublicKey

    def sign(self, data: bytes) -> bytes:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec

        return self.key.sign(data, ec.ECDSA(hashes.SHA256()))


def _public_der(public_key: ec.EllipticCurvePublicKey) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def generate(passphrase: bytes) -> tuple[bytes, bytes]:
    """A new P-256 key pair: (encrypted PKCS#8 PEM private key, SubjectPublicKeyInfo PEM public key)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    private = ec.generate_private_key(ec.SECP256R1())
    plain = private.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption())
    public_pem = private.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo)
    return encrypt_pkcs8(plain, passphrase), public_pem


# DER of the object identifiers of RFC 8018 (PKCS #5 v2.1) and NIST's AES-256-CBC.
_PBES2 = bytes.fromhex("06092a864886f70d01050d")  # 1.2.840.113549.1.5.13
_PBKDF2 = bytes.fromhex("06092a864886f70d01050c")  # 1.2.840.113549.1.5.12
_HMAC_SHA256 = bytes.fromhex("06082a864886f70d0209")  # 1.2.840.113549.2.9
_AES256_CBC = bytes.fromhex("060960864801650304012a")  # 2.16.840.1.101.3.4.1.42
_NULL = b"\x05\x00"


def encrypt_pkcs8(private_der: bytes, passphrase: bytes, rounds: int = KDF_ROUNDS) -> bytes:
    """An unencrypted PKCS#8 key as an EncryptedPrivateKeyInfo PEM: PBES2 with PBKDF2-HMAC-SHA256 over
    `rounds` and AES-256-CBC, as OpenSSL writes it (`openssl pkcs8 -topk8 -v2 aes-256-cbc -iter N`), so
    load_pem_private_key (and openssl) read it like any other encrypted key."""
    from cryptography.hazmat.primitives import hashes, padding
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

    salt, iv = os.urandom(16), os.urandom(16)
    key = PBKDF2HMAC(hashes.SHA256(), 32, salt, rounds).derive(passphrase)
    padder = padding.PKCS7(128).padder()
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    ciphertext = encryptor.update(padder.update(private_der) + padder.finalize()) + encryptor.finalize()
    prf = _der(0x30, _HMAC_SHA256 + _NULL)
    kdf = _der(0x30, _PBKDF2 + _der(0x30, _der(0x04, salt) + _der_integer(rounds) + prf))
    cipher = _der(0x30, _AES256_CBC + _der(0x04, iv))
    algorithm = _der(0x30, _PBES2 + _der(0x30, kdf + cipher))
    return _pem("ENCRYPTED PRIVATE KEY", _der(0x30, algorithm + _der(0x04, ciphertext)))


def _der(tag: int, content: bytes) -> bytes:
    """One DER element: tag, definite length (short or long form), content."""
    size = len(content)
    if size < 0x80:
        return bytes([tag, size]) + content
    length = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(length)]) + length + content


def _der_integer(value: int) -> bytes:
    return _der(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big"))  # a leading 0 keeps it positive


def _pem(label: str, der: bytes) -> bytes:
    text = base64.b64encode(der).decode()
    lines = [text[i:i + 64] for i in range(0, len(text), 64)]
    return "\n".join([f"-----BEGIN {label}-----", *lines, f"-----END {label}-----", ""]).encode()


def write_key_pair(directory: Path, passphrase: bytes, *, force: bool = False) -> tuple[Path, Path]:
    """Write factory-signing.key (mode 600) and factory-signing.pub into `directory`; never overwrite silently."""
    private_path, public_path = directory / PRIVATE_NAME, directory / PUBLIC_NAME
    existing = [str(p) for p in (private_path, public_path) if p.exists()]
    if existing and not force:
        raise ConfigError(f"{' and '.join(existing)} already exist(s)", "choose another --output, or --force")
    private_pem, public_pem = generate(passphrase)
    directory.mkdir(parents=True, exist_ok=True)
    _write_private(private_path, private_pem)
    write_atomically(public_path, public_pem)
    return private_path, public_path


def _write_private(path: Path, content: bytes) -> None:
    """Like write_atomically, but the file is never readable by others, not even for a moment."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.unlink(missing_ok=True)
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as sink:
        sink.write(content)
    temporary.replace(path)


def _read_key_file(path: Path, what: str, hint: str) -> bytes:
    """A key file's bytes; a missing or unreadable one is bad input naming the file and the setting."""
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the {what} {path} ({exc.strerror})", hint) from None


def _require_private(path: Path) -> None:
    """A signing key file that its group or others may open is refused, as ssh refuses such a key: whoever
    can read it can try passphrases offline, and one who can write it can swap the key."""
    try:
        mode = path.stat().st_mode & 0o777
    except OSError:
        return  # missing or unreadable: _read_key_file says so
    if mode & 0o077:
        raise ConfigError(f"the signing key {path} is open to its group or others (mode {mode:04o}); "
                          "a private key must be readable by its owner only", f"chmod 600 {path}")


def load_signer(path: str | Path, passphrase: bytes) -> Signer:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    path = Path(path).expanduser()
    _require_private(path)
    data = _read_key_file(path, "signing key", "set factory.signing_key to the file `inv keys generate` wrote")
    try:
        key = serialization.load_pem_private_key(data, password=passphrase)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"cannot open the signing key {path}: wrong passphrase or not a PEM private key "
                          f"({exc})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise ConfigError(f"the signing key {path} is not an ECDSA P-256 key")
    public = key.public_key()
    return Signer(key, PublicKey(public, str(path), key_id(_public_der(public))))


def load_key_file(path: str | Path) -> tuple[PublicKey, ...]:
    """Every public key in a trusted-keys file: one PEM block or several (a team's keys in one file, or the
    next key next to the current one while signing moves to it), each of them trusted."""
    path = Path(path).expanduser()
    data = _read_key_file(path, "trusted key", "factory.trusted_keys lists public key files (PEM)")
    blocks = [found.group(0) for found in PEM_BLOCK.finditer(data)]
    if not blocks:
        raise ConfigError(f"the trusted key {path} is not a PEM public key")
    if len(blocks) == 1:
        return (_public_key(blocks[0], str(path)),)
    return tuple(_public_key(block, f"{path} (key {number} of {len(blocks)})")
                 for number, block in enumerate(blocks, 1))


def _public_key(pem: bytes, source: str) -> PublicKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError):
        raise ConfigError(f"the trusted key {source} is not a PEM public key") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise ConfigError(f"the trusted key {source} is not an ECDSA P-256 public key")
    return PublicKey(key, source, key_id(_public_der(key)))


def load_public_key(path: str | Path) -> PublicKey:
    """The key of a file that holds one (the .pub `inv keys generate` wrote)."""
    keys = load_key_file(path)
    if len(keys) > 1:
        raise ConfigError(f"{Path(path).expanduser()} holds {len(keys)} public keys, not one")
    return keys[0]


def load_public_keys(paths: Iterable[str | Path]) -> tuple[PublicKey, ...]:
    """Every key of every trusted-keys file, each once."""
    keys: dict[str, PublicKey] = {}
    for path in paths:
        for key in load_key_file(path):
            keys.setdefault(key.keyid, key)
    return tuple(keys.values())
