"""Ed25519 signatures of model packages: who vouches for a package's digest.

The package digest (``package_sha256``, ``models.package``) already names
every byte of a package, but anyone who can write the folder can also write a
new digest. A signature ties the digest to a key: whoever holds the private
key signed exactly this content, and a node that trusts only some public keys
refuses a package signed by anyone else, or not at all.

Keys are PEM files: ``<prefix>.key`` (PKCS#8, unencrypted, mode 0600: keep it
off the line) and ``<prefix>.pub`` (SubjectPublicKeyInfo: copy it to the nodes).
A key's id is the first 16 hex digits of the sha256 of its raw 32 public bytes.

``<package>/signature.json`` holds one signature::

    {"format": "lineside-model-signature", "algorithm": "ed25519",
     "package_sha256": "<the digest signed>", "public_key": "<32 bytes, hex>",
     "key_id": "<16 hex>", "signature": "<64 bytes, hex>", "signed_utc": "..."}

The signed message is ``b"lineside-model-package-v1\\n"`` followed by the
digest's 64 ASCII hex digits. The signature file is not listed in the manifest
(it signs the manifest's digest); writing a new manifest removes it, so a
changed package is never left looking signed.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import structlog
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from models.package import SIGNATURE_FILE, ModelPackage, load_package

log = structlog.get_logger(__name__)

SIGNATURE_FORMAT = "lineside-model-signature"
MESSAGE_PREFIX = b"lineside-model-package-v1\n"
PRIVATE_SUFFIX = ".key"
PUBLIC_SUFFIX = ".pub"


class SigningError(ValueError):
    """A key file that cannot be read or written, or a package that cannot be signed."""


SignatureState = Literal["unsigned", "valid", "untrusted", "invalid"]


@dataclass(frozen=True, slots=True)
class SignatureCheck:
    """What a package's signature says.

    ``state``: ``unsigned`` (no signature file), ``valid`` (signed over this digest by
    one of the trusted keys, ``key_path`` is that key), ``untrusted`` (a sound signature
    over this digest by a key not among the trusted ones) or ``invalid`` (malformed, over
    another digest, or not made by the key it names). ``detail`` says it in words.
    """

    state: SignatureState
    detail: str
    key_id: str | None = None
    key_path: Path | None = None


def key_id(public: Ed25519PublicKey) -> str:
    """The key's id: 16 hex digits of the sha256 of its raw public bytes."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def generate_keypair(prefix: str | Path) -> tuple[Path, Path]:
    """Write a new key pair to ``<prefix>.key`` (mode 0600) and ``<prefix>.pub``.

    Never overwrites: raises ``SigningError`` when either file exists or cannot be written.
    """
    private_path = Path(f"{prefix}{PRIVATE_SUFFIX}")
    public_path = Path(f"{prefix}{PUBLIC_SUFFIX}")
    for path in (private_path, public_path):
        if path.exists():
            raise SigningError(f"{path}: exists; not overwriting a key")
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    try:
        # Created with 0600 from the start: the private key is never readable by others.
        fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(private_pem)
        public_path.write_bytes(public_pem)
    except OSError as exc:
        raise SigningError(f"{exc.filename or prefix}: cannot write: {exc.strerror}") from exc
    log.info("model_key_generated", key_id=key_id(key.public_key()), public=str(public_path))
    return private_path, public_path


def load_private_key(path: str | Path) -> Ed25519PrivateKey:
    """The ed25519 private key in PEM file ``path``. Raises ``SigningError`` otherwise."""
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except OSError as exc:
        raise SigningError(f"{path}: cannot read: {exc.strerror}") from exc
    except (ValueError, TypeError) as exc:
        raise SigningError(f"{path}: not an unencrypted PEM private key ({exc})") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningError(f"{path}: not an ed25519 key ({type(key).__name__})")
    return key


def load_public_key(path: str | Path) -> Ed25519PublicKey:
    """The ed25519 public key in PEM file ``path``. Raises ``SigningError`` otherwise."""
    try:
        key = serialization.load_pem_public_key(Path(path).read_bytes())
    except OSError as exc:
        raise SigningError(f"{path}: cannot read: {exc.strerror}") from exc
    except ValueError as exc:
        raise SigningError(f"{path}: not a PEM public key ({exc})") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise SigningError(f"{path}: not an ed25519 public key ({type(key).__name__})")
    return key


def _message(digest: str) -> bytes:
    return MESSAGE_PREFIX + digest.encode("ascii")


def sign_package(package: str | Path | ModelPackage, private_key: str | Path) -> Path:
    """Verify the package, sign its digest with the key in ``private_key`` and write
    ``signature.json`` into it (replacing one there); its path.

    Raises ``PackageError`` for a package that does not verify (nothing unverified is
    signed) and ``SigningError`` for a bad key or a signature file that cannot be written.
    """
    pkg = package if isinstance(package, ModelPackage) else load_package(package)
    key = load_private_key(private_key)
    public = key.public_key()
    record = {
        "format": SIGNATURE_FORMAT,
        "algorithm": "ed25519",
        "package_sha256": pkg.sha256,
        "public_key": public.public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        ).hex(),
        "key_id": key_id(public),
        "signature": key.sign(_message(pkg.sha256)).hex(),
        "signed_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    path = pkg.root / SIGNATURE_FILE
    try:
        path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    except OSError as exc:
        raise SigningError(f"{path}: cannot write: {exc.strerror}") from exc
    log.info(
        "model_package_signed", package=str(pkg.root), sha256=pkg.sha256, key_id=key_id(public)
    )
    return path


def verify_signature(
    package: ModelPackage, trusted: Sequence[tuple[Path, Ed25519PublicKey]] = ()
) -> SignatureCheck:
    """Check ``package``'s signature against the ``trusted`` keys (``(file, key)`` pairs).

    Never raises for a bad signature: the result says what is wrong (see
    ``SignatureCheck``); the caller decides what it refuses.
    """
    path = package.root / SIGNATURE_FILE
    if not path.is_file():
        return SignatureCheck("unsigned", f"unsigned (no {SIGNATURE_FILE})")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(record, dict) or record.get("format") != SIGNATURE_FORMAT:
            raise ValueError(f"not a {SIGNATURE_FORMAT} file")
        if record.get("algorithm") != "ed25519":
            raise ValueError(f"algorithm {record.get('algorithm')!r}, not ed25519")
        signed = str(record["package_sha256"])
        raw_public = bytes.fromhex(str(record["public_key"]))
        signature = bytes.fromhex(str(record["signature"]))
        public = Ed25519PublicKey.from_public_bytes(raw_public)
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        return SignatureCheck("invalid", f"{SIGNATURE_FILE}: unreadable ({exc})")
    kid = key_id(public)
    if signed != package.sha256:
        return SignatureCheck(
            "invalid",
            f"{SIGNATURE_FILE}: signs package_sha256 {signed[:16]}..., not this package's "
            f"{package.sha256[:16]}... (changed after signing)",
            kid,
        )
    try:
        public.verify(signature, _message(package.sha256))
    except InvalidSignature:
        return SignatureCheck(
            "invalid", f"{SIGNATURE_FILE}: the signature does not verify with key {kid}", kid
        )
    for key_path, key in trusted:
        # The whole key, not its short id, decides trust.
        if (
            key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            == raw_public
        ):
            return SignatureCheck(
                "valid", f"signed by trusted key {kid} ({key_path})", kid, key_path
            )
    return SignatureCheck("untrusted", f"signed by key {kid}, which is not trusted", kid)
