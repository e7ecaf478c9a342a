"""Who may do what on the HMI server, against real asyncua clients on loopback.

Calls need a signed channel by default, roles differ, wrong passwords back off and
lock out, long strings are refused, and each session has limits.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from asyncua import Client, ua
from asyncua.crypto import cert_gen, security_policies
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID
from structlog.testing import capture_logs

from node.hmi import HmiServer, HmiSettings, HmiUser, hash_password
from node.hmi.security import Pki
from node.sim.hmi import MemoryResults, SimControl, sample_record
from node.state import VisionState

pytestmark = pytest.mark.asyncio(loop_scope="module")

NODESET = Path(__file__).resolve().parents[2] / "../shared/opcua/Opc.Ua.MachineVision.NodeSet2.xml"
MV = "http://opcfoundation.org/UA/MachineVision"
OPERATOR = ("olga", "orange-7")
ENGINEER = ("emil", "emerald-9")
PANEL_URI = "urn:test:panel"


class Rig:
    def __init__(self, hmi: HmiServer, control: SimControl, results: MemoryResults) -> None:
        self.hmi, self.control, self.results = hmi, control, results
        self.cert: Path
        self.key: Path


def _users() -> list[HmiUser]:
    return [
        HmiUser(name=OPERATOR[0], role="operator", password_hash=hash_password(OPERATOR[1])),
        HmiUser(name=ENGINEER[0], role="engineer", password_hash=hash_password(ENGINEER[1])),
    ]


def _client_cert(d: Path) -> tuple[Path, Path]:
    key = cert_gen.generate_private_key()
    cert = cert_gen.generate_self_signed_app_certificate(
        key,
        "panel",
        {},
        [x509.UniformResourceIdentifier(PANEL_URI)],
        [ExtendedKeyUsageOID.CLIENT_AUTH],
    )
    d.mkdir(parents=True, exist_ok=True)
    cp, kp = d / "panel.der", d / "panel.pem"
    cp.write_bytes(cert.public_bytes(serialization.Encoding.DER))
    kp.write_bytes(cert_gen.dump_private_key_as_pem(key))
    return cp, kp


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def rig(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Rig]:
    """The server with its default security (only the login back-off shortened), the 40100
    model, a Sign endpoint, an operator and an engineer, and one trusted panel certificate."""
    state = tmp_path_factory.mktemp("hmi")
    cert, key = _client_cert(state / "client")
    trusted = Pki(state / "pki").trusted
    trusted.mkdir(parents=True)
    (trusted / "panel.der").write_bytes(cert.read_bytes())
    settings = HmiSettings(
        endpoint="opc.tcp://127.0.0.1:0/lineside/",
        nodeset=NODESET,
        security_policies=["Basic256Sha256_Sign", "Basic256Sha256_SignAndEncrypt"],
        users=_users(),
    )
    results, control = MemoryResults(), SimControl(recipes=["default", "fine-pitch"])
    hmi = HmiServer(settings, state_dir=state, control=control, results=results, node_name="line1")
    control.report = hmi.set_state
    async with hmi:
        hmi.set_state(VisionState.INITIALIZED)
        r = Rig(hmi, control, results)
        r.cert, r.key = cert, key
        yield r


async def _signed(rig: Rig, user: tuple[str, str]) -> Client:
    c = Client(rig.hmi.endpoint_url, timeout=5)
    c.application_uri = PANEL_URI
    c.set_user(user[0])
    c.set_password(user[1])
    await c.set_security(
        security_policies.SecurityPolicyBasic256Sha256,
        str(rig.cert),
        str(rig.key),
        mode=ua.MessageSecurityMode.Sign,
    )
    return c


def _plain(rig: Rig, user: tuple[str, str] | None = None) -> Client:
    c = Client(rig.hmi.endpoint_url, timeout=5)
    if user is not None:
        c.set_user(user[0])
        c.set_password(user[1])
    return c


async def _sm(c: Client) -> tuple[int, Any]:
    ns = await c.get_namespace_index(MV)
    vs = await c.nodes.objects.get_child("2:VisionSystem")
    return ns, await vs.get_child(f"{ns}:VisionStateMachine")


def _int32(v: int) -> ua.Variant:
    return ua.Variant(v, ua.VariantType.Int32)


async def test_calls_over_security_policy_none_are_refused_by_default(rig: Rig) -> None:
    """A logged-in engineer on the unsigned endpoint may read, but Halt and ReviewResult are
    refused with BadSecurityModeInsufficient; nothing reaches the node."""
    async with _plain(rig, ENGINEER) as c:
        ns, sm = await _sm(c)
        assert await c.get_node("ns=2;s=Lineside.Health.State").read_value() == "Initialized"
        with pytest.raises(ua.uaerrors.BadSecurityModeInsufficient):
            await sm.call_method(f"{ns}:Halt", _int32(0), "over None")
        lin = await c.nodes.objects.get_child("2:Lineside")
        with pytest.raises(ua.uaerrors.BadSecurityModeInsufficient):
            await lin.call_method("2:ReviewResult", "run1-0", "pass", "", "")
    assert rig.control.calls == []


async def test_operator_halts_and_resets_but_may_not_change_modes_or_recipes(rig: Rig) -> None:
    """Over a signed channel an operator may Halt and Reset; SelectModeAutomatic and
    PrepareRecipe are BadUserAccessDenied for the operator and allowed to the engineer."""
    rig.control.calls.clear()
    c = await _signed(rig, OPERATOR)
    async with c:
        await c.load_data_type_definitions()
        ns, sm = await _sm(c)
        with pytest.raises(ua.uaerrors.BadUserAccessDenied):
            await sm.call_method(f"{ns}:SelectModeAutomatic")
        rcm = await (await c.nodes.objects.get_child("2:VisionSystem")).get_child(
            f"{ns}:RecipeManagement"
        )
        with pytest.raises(ua.uaerrors.BadUserAccessDenied):
            await rcm.call_method(
                f"{ns}:PrepareRecipe",
                ua.RecipeIdExternalDataType(Id="fine-pitch"),
                ua.RecipeIdInternalDataType(Id=""),
            )
        assert rig.control.calls == []
        await sm.call_method(f"{ns}:Halt", _int32(0), "jam")
        await rig.hmi.drain()
        await sm.call_method(f"{ns}:Reset", _int32(0), "cleared")
        await rig.hmi.drain()
    assert rig.control.calls == ["halt", "reset"]
    c = await _signed(rig, ENGINEER)
    async with c:
        await c.load_data_type_definitions()
        ns, sm = await _sm(c)
        assert await sm.call_method(f"{ns}:SelectModeAutomatic") == 0
        await rig.hmi.drain()
        await sm.call_method(f"{ns}:Halt", _int32(0), "done")
        await rig.hmi.drain()
        await sm.call_method(f"{ns}:Reset", _int32(0), "")
        await rig.hmi.drain()
    assert rig.control.calls[2:] == ["select_mode_automatic", "halt", "reset"]


async def test_strings_past_the_limit_are_refused(rig: Rig) -> None:
    """A review comment of 1024 characters is stored; one of 1025 and one of 1 MB are refused
    with BadOutOfRange and store nothing."""
    rec = sample_record(1)
    rig.results.add(rec)
    c = await _signed(rig, OPERATOR)
    async with c:
        lin = await c.nodes.objects.get_child("2:Lineside")
        await lin.call_method("2:ReviewResult", rec.result_id, "pass", "", "x" * 1024)
        assert rig.results.reviews[rec.result_id].comment == "x" * 1024
        del rig.results.reviews[rec.result_id]
        for comment in ("y" * 1025, "z" * 1_000_000):
            with pytest.raises(ua.uaerrors.BadOutOfRange):
                await lin.call_method("2:ReviewResult", rec.result_id, "pass", "", comment)
        ns, sm = await _sm(c)
        with pytest.raises(ua.uaerrors.BadOutOfRange):
            await sm.call_method(f"{ns}:Halt", _int32(0), "w" * 5000)
    assert rec.result_id not in rig.results.reviews


async def _login(url: str, user: tuple[str, str]) -> bool:
    c = Client(url, timeout=5)
    c.set_user(user[0])
    c.set_password(user[1])
    try:
        async with c:
            return True
    except ua.uaerrors.BadUserAccessDenied:
        return False


async def test_a_certificate_trusted_while_running_is_accepted_without_a_restart(
    rig: Rig, tmp_path: Path
) -> None:
    """A client certificate unknown at start is refused on a signed channel; once it is
    copied into trusted/ (as ``lineside web`` does with its own) the next session is
    accepted, with no restart or reload call."""
    key = cert_gen.generate_private_key()
    uri = "urn:test:late-panel"
    cert = cert_gen.generate_self_signed_app_certificate(
        key, "late", {}, [x509.UniformResourceIdentifier(uri)], [ExtendedKeyUsageOID.CLIENT_AUTH]
    )
    cp, kp = tmp_path / "late.der", tmp_path / "late.pem"
    cp.write_bytes(cert.public_bytes(serialization.Encoding.DER))
    kp.write_bytes(cert_gen.dump_private_key_as_pem(key))

    async def signed() -> bool:
        c = Client(rig.hmi.endpoint_url, timeout=5)
        c.application_uri = uri
        c.set_user(OPERATOR[0])
        c.set_password(OPERATOR[1])
        await c.set_security(
            security_policies.SecurityPolicyBasic256Sha256,
            str(cp),
            str(kp),
            mode=ua.MessageSecurityMode.Sign,
        )
        try:
            async with c:
                return True
        except (ua.UaError, OSError, TimeoutError):
            return False

    assert not await signed()
    (rig.hmi.pki.trusted / "late.der").write_bytes(cp.read_bytes())
    try:
        assert await signed()
    finally:
        (rig.hmi.pki.trusted / "late.der").unlink()


async def test_wrong_passwords_back_off(rig: Rig) -> None:
    """After 3 wrong passwords the right one, tried at once, is refused (logged as throttled)
    without touching another user; once the 1 s back-off has passed it is accepted."""
    url = rig.hmi.endpoint_url
    with capture_logs() as logs:
        for _ in range(3):
            assert not await _login(url, (ENGINEER[0], "guess"))
        assert not await _login(url, ENGINEER)
        assert await _login(url, OPERATOR)
        await asyncio.sleep(1.1)
        assert await _login(url, ENGINEER)
    throttled = [e for e in logs if e["event"] == "hmi_login_throttled"]
    assert throttled and throttled[0]["user"] == ENGINEER[0]


async def test_ten_wrong_passwords_lock_the_name_out(tmp_path: Path) -> None:
    """Ten wrong passwords (each waiting out its back-off, so each is checked) lock the name:
    the right password is then refused until ``login_lockout_s`` has passed; logged."""
    settings = HmiSettings(
        endpoint="opc.tcp://127.0.0.1:0/lineside/",
        nodeset=None,
        security_policies=[],
        users=_users(),
        login_backoff_s=0.01,
        login_lockout_s=2.0,
    )
    async with HmiServer(
        settings, state_dir=tmp_path, control=SimControl(), results=MemoryResults(), node_name="l"
    ) as hmi:
        url = hmi.endpoint_url
        with capture_logs() as logs:
            for k in range(10):
                await asyncio.sleep(0.01 * 2 ** max(0, k - 3) + 0.01)
                assert not await _login(url, (OPERATOR[0], "guess"))
            checked = [e for e in logs if e["event"] == "hmi_login_refused"]
            assert len(checked) == 10
            assert any(e["event"] == "hmi_login_lockout" for e in logs)
            assert not await _login(url, OPERATOR)
            assert any(e["event"] == "hmi_login_locked" for e in logs)
            await asyncio.sleep(2.1)
            assert await _login(url, OPERATOR)


async def test_session_subscription_and_item_limits(tmp_path: Path) -> None:
    """With small limits: a third session, a third subscription in a session and a fourth
    monitored item are refused with their Bad status codes, and a burst of requests past the
    budget gets BadTooManyOperations."""
    settings = HmiSettings(
        endpoint="opc.tcp://127.0.0.1:0/lineside/",
        nodeset=None,
        security_policies=[],
        max_sessions=2,
        max_subscriptions_per_session=2,
        max_monitored_items_per_session=3,
        max_requests_per_s=5,
        request_burst=40,
    )
    async with HmiServer(
        settings,
        state_dir=tmp_path,
        control=SimControl(),
        results=MemoryResults(),
        node_name="l1",
    ) as hmi:
        url = hmi.endpoint_url
        async with Client(url, timeout=5) as a, Client(url, timeout=5) as b:
            with pytest.raises(ua.uaerrors.BadTooManySessions):
                async with Client(url, timeout=5):
                    pass
            nodes = [
                a.get_node(f"ns=2;s=Lineside.LastResult.{n}")
                for n in ("PartId", "Verdict", "Confidence", "DefectType")
            ]
            s1 = await a.create_subscription(50, None)
            await a.create_subscription(50, None)
            with pytest.raises(ua.uaerrors.BadTooManySubscriptions):
                await a.create_subscription(50, None)
            await s1.subscribe_data_change(nodes[:3])
            with pytest.raises(ua.uaerrors.BadTooManyMonitoredItems):
                await s1.subscribe_data_change(nodes[3:])
            refused = 0
            for _ in range(60):
                try:
                    await b.get_node("ns=2;s=Lineside.Health.State").read_value()
                except ua.uaerrors.BadTooManyOperations:
                    refused += 1
            assert refused >= 10
        # the sessions closed: a new one is welcome again
        async with Client(url, timeout=5) as c:
            await c.get_node("ns=2;s=Lineside.Health.State").read_value()


async def test_messages_past_max_message_size_are_refused(tmp_path: Path) -> None:
    """A request larger than ``max_message_size`` never reaches a method."""
    settings = HmiSettings(
        endpoint="opc.tcp://127.0.0.1:0/lineside/",
        nodeset=None,
        security_policies=[],
        allow_insecure_writes=True,
        max_message_size=65_536,
        users=_users(),
    )
    results = MemoryResults()
    rec = sample_record(3)
    results.add(rec)
    async with HmiServer(
        settings, state_dir=tmp_path, control=SimControl(), results=results, node_name="l1"
    ) as hmi:
        c = Client(hmi.endpoint_url, timeout=5)
        c.set_user(OPERATOR[0])
        c.set_password(OPERATOR[1])
        with pytest.raises(Exception):  # noqa: B017 - the client sees a closed link
            async with c:
                lin = await c.nodes.objects.get_child("2:Lineside")
                await lin.call_method("2:ReviewResult", rec.result_id, "pass", "", "m" * 200_000)
    assert rec.result_id not in results.reviews


async def test_insecure_writes_opt_out_is_warned_at_start(tmp_path: Path) -> None:
    """``allow_insecure_writes`` is logged as a warning naming the key at every start."""
    settings = HmiSettings(
        endpoint="opc.tcp://127.0.0.1:0/lineside/",
        nodeset=None,
        security_policies=[],
        allow_insecure_writes=True,
    )
    with capture_logs() as logs:
        async with HmiServer(
            settings,
            state_dir=tmp_path,
            control=SimControl(),
            results=MemoryResults(),
            node_name="l1",
        ):
            pass
    warned = [e for e in logs if e["event"] == "hmi_insecure_writes_allowed"]
    assert warned and warned[0]["log_level"] == "warning"
    assert warned[0]["key"] == "hmi.allow_insecure_writes"
