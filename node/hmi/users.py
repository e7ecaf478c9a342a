"""Salted password hashes for HMI users, their check, and the ``hash-password`` command.

A hash reads ``scrypt$<n>$<r>$<p>$<salt hex>$<hash hex>`` (stdlib ``hashlib.scrypt``,
16-byte random salt, 32-byte key). Make one with ``lineside hmi hash-password`` or
``python -m node.hmi.users`` and paste it into ``[[hmi.users]]``.
"""

from __future__ import annotations

import argparse
import getpass
import hashlib
import hmac
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass

_N, _R, _P = 2**14, 8, 1
_SALT_BYTES = 16
_KEY_BYTES = 32


@dataclass(frozen=True, slots=True)
class _Parsed:
    n: int
    r: int
    p: int
    salt: bytes
    key: bytes


def parse_hash(text: str) -> _Parsed:
    """Split a stored hash into its parameters.

    Raises:
        ValueError: not ``scrypt$n$r$p$salt$hash`` with sane parameters.
    """
    parts = text.split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        raise ValueError("expected scrypt$<n>$<r>$<p>$<salt hex>$<hash hex>")
    try:
        n, r, p = (int(x) for x in parts[1:4])
        salt, key = bytes.fromhex(parts[4]), bytes.fromhex(parts[5])
    except ValueError as exc:
        raise ValueError(f"malformed password hash: {exc}") from exc
    if n < 2**10 or n > 2**20 or n & (n - 1) or not 1 <= r <= 32 or not 1 <= p <= 16:
        raise ValueError("scrypt parameters out of range (n a power of two 2**10..2**20)")
    if len(salt) < 8 or len(key) < 16:
        raise ValueError("salt or hash too short")
    return _Parsed(n, r, p, salt, key)


def _derive(password: str, salt: bytes, n: int, r: int, p: int, length: int) -> bytes:
    return hashlib.scrypt(
        password.encode(), salt=salt, n=n, r=r, p=p, dklen=length, maxmem=256 * n * r + 2**20
    )


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """A new salted scrypt hash of ``password`` (about 50 ms of CPU).

    Raises:
        ValueError: the password is empty.
    """
    if not password:
        raise ValueError("empty password")
    salt = os.urandom(_SALT_BYTES) if salt is None else salt
    key = _derive(password, salt, _N, _R, _P, _KEY_BYTES)
    return f"scrypt${_N}${_R}${_P}${salt.hex()}${key.hex()}"


def verify_password(password: str, stored: str) -> bool:
    """True when ``password`` matches the ``stored`` hash (constant-time compare).

    A malformed ``stored`` hash never matches.
    """
    try:
        h = parse_hash(stored)
    except ValueError:
        return False
    got = _derive(password, h.salt, h.n, h.r, h.p, len(h.key))
    return hmac.compare_digest(got, h.key)


def add_parsers(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``hmi hash-password`` to the ``lineside`` command line (handler: :func:`run_cli`)."""
    hmi = subparsers.add_parser("hmi", help="HMI OPC UA server tools")
    sub = hmi.add_subparsers(dest="hmi_command", required=True)
    hp = sub.add_parser("hash-password", help="print a salted hash for [[hmi.users]]")
    hp.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from stdin instead of prompting",
    )


def run_cli(args: argparse.Namespace) -> int:
    """Run the ``hmi`` subcommand in ``args``; returns the exit code."""
    if args.hmi_command == "hash-password":
        if args.password_stdin:
            password = sys.stdin.readline().rstrip("\r\n")
        else:
            password = getpass.getpass("password: ")
            if getpass.getpass("again: ") != password:
                print("passwords differ", file=sys.stderr)
                return 2
        if not password:
            print("empty password", file=sys.stderr)
            return 2
        print(hash_password(password))
        return 0
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m node.hmi.users hash-password [--password-stdin]``."""
    parser = argparse.ArgumentParser(prog="python -m node.hmi.users")
    sub = parser.add_subparsers(dest="command", required=True)
    add_parsers(sub)
    return run_cli(parser.parse_args(["hmi", *(sys.argv[1:] if argv is None else argv)]))


if __name__ == "__main__":
    raise SystemExit(main())
