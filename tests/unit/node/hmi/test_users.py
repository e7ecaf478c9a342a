"""Password hashes for HMI users, their CLI, and the HMI settings' validation."""

from __future__ import annotations

import io

import pytest
from pydantic import ValidationError

from node.hmi.settings import HmiSettings, HmiUser
from node.hmi.users import hash_password, main, parse_hash, verify_password


def test_hash_verifies_and_is_salted() -> None:
    """A hash verifies its password only, and two hashes of one password differ (salt)."""
    h = hash_password("s3cret")
    assert verify_password("s3cret", h) and not verify_password("S3cret", h)
    assert h != hash_password("s3cret")
    p = parse_hash(h)
    assert (p.n, p.r, p.p, len(p.salt), len(p.key)) == (2**14, 8, 1, 16, 32)


@pytest.mark.parametrize(
    "bad", ["", "plain", "scrypt$16384$8$1$zz$00", "scrypt$1000$8$1$" + "00" * 16 + "$" + "00" * 32]
)
def test_malformed_hashes_never_verify_and_fail_validation(bad: str) -> None:
    """A malformed hash matches no password and is a config error naming the user's field."""
    assert not verify_password("x", bad)
    with pytest.raises(ValidationError, match="password_hash"):
        HmiUser(name="olga", role="operator", password_hash=bad)


def test_cli_prints_a_hash_from_stdin(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``python -m node.hmi.users hash-password --password-stdin`` prints a usable hash."""
    monkeypatch.setattr("sys.stdin", io.StringIO("orange-7\n"))
    assert main(["hash-password", "--password-stdin"]) == 0
    out = capsys.readouterr().out.strip()
    assert verify_password("orange-7", out)


def test_settings_reject_unknown_keys_duplicates_and_bad_endpoints() -> None:
    """Unknown keys, duplicate user names and non-opc.tcp endpoints are refused."""
    h = hash_password("pw")
    with pytest.raises(ValidationError, match="extra"):
        HmiSettings.model_validate({"endpoint_url": "x"})
    with pytest.raises(ValidationError, match="duplicate"):
        HmiSettings(users=[HmiUser(name="a", role="operator", password_hash=h)] * 2)
    with pytest.raises(ValidationError, match=r"opc\.tcp"):
        HmiSettings(endpoint="http://x")
    with pytest.raises(ValidationError, match="security_policies"):
        HmiSettings(allow_unsecured=False, security_policies=[])
    s = HmiSettings()
    assert s.security_policies[0] == "Basic256Sha256_SignAndEncrypt" and s.allow_unsecured
