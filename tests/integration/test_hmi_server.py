"""The HMI OPC UA server (OPC 40100 model + plain namespace) against real asyncua clients.

One server per module (building the address space takes seconds); tests that
move the state machine put it back where they found it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from asyncua import Client, ua
from asyncua.common.node import Node
from asyncua.crypto import cert_gen, security_policies
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID
from structlog.testing import capture_logs

from node.hmi import HmiServer, HmiSettings, HmiUser, hash_password
from node.sim.hmi import MemoryResults, SimControl, sample_record
from node.state import VisionState

pytestmark = pytest.mark.asyncio(loop_scope="module")

NODESET = Path(__file__).resolve().parents[2] / "../shared/opcua/Opc.Ua.MachineVision.NodeSet2.xml"
MV = "http://opcfoundation.org/UA/MachineVision"
OPERATOR = ("olga", "orange-7")
ENGINEER = ("emil", "emerald-9")


class Rig:
    """The server with its fakes."""

    def __init__(self, hmi: HmiServer, results: MemoryResults, control: SimControl) -> None:
        self.hmi, self.results, self.control = hmi, results, control
        self.next_part = 0

    def publish(self, n: int = 1, **kw: Any) -> list[str]:
        ids = []
        for _ in range(n):
            rec = sample_record(self.next_part, **kw)
            self.next_part += 1
            self.results.add(rec)
            stats = {"inspected": self.next_part, "rejected": self.next_part, "fail_safe": 0}
            stats["defects_by_type"] = {"scratch": self.next_part}
            stats["latency_ms"] = {"p50": 12.5, "p99": 20.0, "max": 21.0}
            self.hmi.publish(rec, b"\x89PNG\r\n\x1a\nthumb", stats)
            ids.append(rec.result_id)
        return ids


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def rig(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Rig]:
    """A running HMI server on a free loopback port with the 40100 NodeSet, an operator and an
    engineer, taking calls on the unsigned endpoint too (signing: test_hmi_access.py)."""
    settings = HmiSettings(
        endpoint="opc.tcp://127.0.0.1:0/lineside/",
        nodeset=NODESET,
        allow_insecure_writes=True,
        users=[
            HmiUser(name=OPERATOR[0], role="operator", password_hash=hash_password(OPERATOR[1])),
            HmiUser(name=ENGINEER[0], role="engineer", password_hash=hash_password(ENGINEER[1])),
        ],
    )
    results, control = MemoryResults(), SimControl(recipes=["default", "fine-pitch"])
    hmi = HmiServer(
        settings,
        state_dir=tmp_path_factory.mktemp("hmi"),
        control=control,
        results=results,
        node_name="line1",
    )
    control.report = hmi.set_state
    async with hmi:
        hmi.set_state(VisionState.INITIALIZED)
        yield Rig(hmi, results, control)


def _int32(v: int) -> ua.Variant:
    return ua.Variant(v, ua.VariantType.Int32)


def _client(rig: Rig, user: tuple[str, str] | None = None) -> Client:
    c = Client(rig.hmi.endpoint_url, timeout=5)
    if user is not None:
        c.set_user(user[0])
        c.set_password(user[1])
    return c


async def _mv(c: Client) -> tuple[int, Node]:
    ns = await c.get_namespace_index(MV)
    return ns, await c.nodes.objects.get_child("2:VisionSystem")


async def _states(c: Client) -> tuple[str, str]:
    ns, vs = await _mv(c)
    top = await vs.get_child([f"{ns}:VisionStateMachine", "0:CurrentState"])
    auto = await vs.get_child(
        [f"{ns}:VisionStateMachine", f"{ns}:AutomaticModeStateMachine", "0:CurrentState"]
    )
    return (await top.read_value()).Text, (await auto.read_value()).Text or ""


class _Events:
    def __init__(self) -> None:
        self.events: list[Any] = []
        self.changes: list[tuple[str, Any]] = []
        self.got = asyncio.Event()

    def event_notification(self, event: Any) -> None:
        self.events.append(event)
        self.got.set()

    def datachange_notification(self, node: Node, val: Any, data: Any) -> None:
        self.changes.append((node.nodeid.Identifier, val))
        self.got.set()

    async def wait(self, pred: Any, within_s: float = 5.0) -> None:
        async with asyncio.timeout(within_s):
            while not pred():
                self.got.clear()
                await self.got.wait()


async def test_client_browses_the_vision_system(rig: Rig) -> None:
    """The VisionSystem has the 40100 state machine, result and recipe management, with methods."""
    async with _client(rig) as c:
        ns, vs = await _mv(c)
        assert (await vs.read_type_definition()) == ua.NodeId(1003, ns)
        names = {(await n.read_browse_name()).Name for n in await vs.get_children()}
        assert {"VisionStateMachine", "ResultManagement", "RecipeManagement"} <= names
        sm = await vs.get_child(f"{ns}:VisionStateMachine")
        methods = {(await m.read_browse_name()).Name for m in await sm.get_methods()}
        assert {"Halt", "Reset", "SelectModeAutomatic"} <= methods
        auto = await sm.get_child(f"{ns}:AutomaticModeStateMachine")
        assert {"StartContinuous", "Stop"} <= {
            (await m.read_browse_name()).Name for m in await auto.get_methods()
        }
        rm = await vs.get_child(f"{ns}:ResultManagement")
        assert {"GetResultById", "GetResultListFiltered"} <= {
            (await m.read_browse_name()).Name for m in await rm.get_methods()
        }


async def test_plain_namespace_read_and_subscribed_at_10ms(rig: Rig) -> None:
    """A 10 ms subscription sees each PartId; LastResult has the explanation in 3 languages
    and the rule the verdict cites."""
    async with _client(rig) as c:
        h = _Events()
        sub = await c.create_subscription(10, h)
        part = c.get_node("ns=2;s=Lineside.LastResult.PartId")
        await sub.subscribe_data_change(part, queuesize=100)
        await h.wait(lambda: len(h.changes) >= 1)  # the initial value
        first = rig.next_part
        rig.publish(5)
        await h.wait(lambda: any(v == first + 4 for _, v in h.changes))
        seen = [v for _, v in h.changes]
        assert seen[-5:] == list(range(first, first + 5))
        assert (await c.get_node("ns=2;s=Lineside.LastResult.Explanation").read_value()) == (
            ua.LocalizedText("Scratch 3.2 mm long at the top left.", "en")
        )
        de = await c.get_node("ns=2;s=Lineside.LastResult.ExplanationDe").read_value()
        ja = await c.get_node("ns=2;s=Lineside.LastResult.ExplanationJa").read_value()
        assert (de.Locale, ja.Locale) == ("de", "ja") and "Kratzer" in de.Text and "傷" in ja.Text
        thumb = await c.get_node("ns=2;s=Lineside.LastResult.Thumbnail").read_value()
        assert thumb.startswith(b"\x89PNG")
        rule = await c.get_node("ns=2;s=Lineside.LastResult.Rule").read_value()
        assert rule == "no scratches on the face"
        assert await c.get_node("ns=2;s=Lineside.Counters.Inspected").read_value() == rig.next_part
        by_type = c.get_node("ns=2;s=Lineside.Counters.ByDefectType.scratch")
        assert await by_type.read_value() == rig.next_part
        assert await c.get_node("ns=2;s=Lineside.Stats.LatencyP99Ms").read_value() == 20.0
        await sub.delete()


async def test_a_shadow_candidates_figures_are_published_beside_the_result(rig: Rig) -> None:
    """With a shadow candidate running, its figures come with each result's statistics and
    a panel reads them under Lineside.Shadow (none running: they stay empty and 0)."""
    async with _client(rig) as c:
        judged = c.get_node("ns=2;s=Lineside.Shadow.Judged")
        rig.publish(1)
        await asyncio.sleep(0.2)
        assert await judged.read_value() == 0
        rec = sample_record(rig.next_part)
        rig.next_part += 1
        rig.results.add(rec)
        shadow = {"package_sha256": "ab" * 32, "judged": 41, "agree": 38, "active_only": 2}
        shadow |= {"candidate_only": 1, "type_differs": 3, "skipped": 4}
        rig.hmi.publish(rec, None, {"inspected": rig.next_part, "shadow": shadow})
        for _ in range(50):
            if await judged.read_value() == 41:
                break
            await asyncio.sleep(0.05)
        read = {
            name: await c.get_node(f"ns=2;s=Lineside.Shadow.{name}").read_value()
            for name in ("Judged", "Agree", "ActiveOnly", "CandidateOnly", "TypeDiffers")
        }
        assert read == {
            "Judged": 41,
            "Agree": 38,
            "ActiveOnly": 2,
            "CandidateOnly": 1,
            "TypeDiffers": 3,
        }
        assert await c.get_node("ns=2;s=Lineside.Shadow.Skipped").read_value() == 4
        sha = await c.get_node("ns=2;s=Lineside.Shadow.PackageSha256").read_value()
        assert sha == "ab" * 32


async def test_one_result_ready_event_per_part(rig: Rig) -> None:
    """Each part gives one ResultReadyEvent: ResultState, PartId, ProcessingTimes, explanation."""
    async with _client(rig) as c:
        await c.load_data_type_definitions()
        ns, vs = await _mv(c)
        h = _Events()
        sub = await c.create_subscription(10, h)
        await sub.subscribe_events(vs, ua.NodeId(1024, ns), queuesize=1000)
        ids = rig.publish(20)
        await h.wait(lambda: len(h.events) >= 20)
        await asyncio.sleep(0.1)
        assert [e.ResultId.Id for e in h.events] == ids
        e = h.events[-1]
        assert e.ResultState == 1 and e.PartId.Id == ids[-1].split("-")[1]
        assert e.ProcessingTimes.ProcessingDuration == 12.5
        assert e.ProcessingTimes.EndTime - e.ProcessingTimes.StartTime == dt.timedelta(
            milliseconds=12.5
        )
        content = [v.Value for v in e.ResultContent]  # BaseDataType[]: Variants
        assert content[0] == ua.LocalizedText("Scratch 3.2 mm long at the top left.", "en")
        assert {t.Locale for t in content[:3]} == {"en", "de", "ja"}
        decision = json.loads(content[-1])
        assert decision["verdict"] == "reject" and decision["defect_type"] == "scratch"
        assert e.Message.Text == "Scratch 3.2 mm long at the top left."
        await sub.delete()


async def test_anonymous_writes_and_calls_are_refused(rig: Rig) -> None:
    """An anonymous session may read but neither write a variable nor call a method."""
    async with _client(rig) as c:
        ns, vs = await _mv(c)
        verdict = c.get_node("ns=2;s=Lineside.LastResult.Verdict")
        await verdict.read_value()
        with pytest.raises(ua.uaerrors.BadUserAccessDenied):
            await verdict.write_value(ua.Variant("pass", ua.VariantType.String))
        sm = await vs.get_child(f"{ns}:VisionStateMachine")
        with pytest.raises(ua.uaerrors.BadUserAccessDenied):
            await sm.call_method(f"{ns}:Halt", ua.Variant(0, ua.VariantType.Int32), "x")
        lin = await c.nodes.objects.get_child("2:Lineside")
        with pytest.raises(ua.uaerrors.BadUserAccessDenied):
            await lin.call_method("2:ReviewResult", "run1-0", "pass", "", "")
    assert "halt" not in rig.control.calls


async def test_wrong_password_is_refused(rig: Rig) -> None:
    """A session with a wrong password is not activated."""
    with pytest.raises(ua.uaerrors.BadUserAccessDenied):
        async with _client(rig, (OPERATOR[0], "wrong")):
            pass


async def test_state_machine_follows_start_camera_error_reset_and_halt(rig: Rig) -> None:
    """CurrentState follows the node: Initialized, Ready and ContinuousExecution by an engineer's
    calls, Error on a camera error, back through Reset, Halted by Halt and out again by Reset."""
    async with _client(rig, ENGINEER) as c:
        ns, vs = await _mv(c)
        sm = await vs.get_child(f"{ns}:VisionStateMachine")
        auto = await sm.get_child(f"{ns}:AutomaticModeStateMachine")
        assert await _states(c) == ("Operational", "Initialized")
        assert await sm.call_method(f"{ns}:SelectModeAutomatic") == 0
        await rig.hmi.drain()
        assert await _states(c) == ("Operational", "Ready")
        await c.load_data_type_definitions()
        out = await auto.call_method(
            f"{ns}:StartContinuous",
            ua.MeasIdDataType(Id=""),
            ua.PartIdDataType(Id=""),
            ua.RecipeIdExternalDataType(Id="fine-pitch"),
            ua.ProductIdDataType(Id=""),
            ua.Variant([], ua.VariantType.Variant),
        )
        assert out[1] == 0 and out[0].Id.startswith("continuous-")
        assert rig.control.prepared == "fine-pitch"
        await rig.hmi.drain()
        assert await _states(c) == ("Operational", "ContinuousExecution")
        rig.hmi.set_state(VisionState.ERROR, "camera: link lost")
        await rig.hmi.drain()
        assert await _states(c) == ("Error", "")
        assert await c.get_node("ns=2;s=Lineside.Health.StateDetail").read_value() == (
            "camera: link lost"
        )
        with pytest.raises(ua.uaerrors.BadInvalidState):  # Stop is for ContinuousExecution
            await auto.call_method(f"{ns}:Stop", ua.Variant(0, ua.VariantType.Int32), "")
        await sm.call_method(f"{ns}:Reset", ua.Variant(0, ua.VariantType.Int32), "cleaned")
        await rig.hmi.drain()
        assert await _states(c) == ("Operational", "Initialized")
        await sm.call_method(f"{ns}:Halt", ua.Variant(1, ua.VariantType.Int32), "shift end")
        await rig.hmi.drain()
        assert await _states(c) == ("Halted", "")
        with pytest.raises(ua.uaerrors.BadInvalidState):
            await sm.call_method(f"{ns}:SelectModeAutomatic")
        await sm.call_method(f"{ns}:Reset", ua.Variant(0, ua.VariantType.Int32), "")
        await rig.hmi.drain()
        assert await _states(c) == ("Operational", "Initialized")
        state_id = await (await sm.get_child(["0:CurrentState", "0:Id"])).read_value()
        assert state_id == ua.NodeId(5031, ns)  # VisionStateMachineType's Operational
    assert rig.control.calls[:3] == [
        "select_mode_automatic",
        "prepare_recipe:fine-pitch",
        "start_continuous",
    ]


async def test_result_and_recipe_management_answer_from_the_store(rig: Rig) -> None:
    """GetResultById and GetResultListFiltered read the audit store; recipes are the config's."""
    rig.publish(3)
    await rig.hmi.drain()
    async with _client(rig, ENGINEER) as c:
        await c.load_data_type_definitions()
        ns, vs = await _mv(c)
        rm = await vs.get_child(f"{ns}:ResultManagement")
        wanted = f"run1-{rig.next_part - 2}"
        _, result, err = await rm.call_method(
            f"{ns}:GetResultById",
            ua.ResultIdDataType(Id=wanted),
            ua.Variant(1000, ua.VariantType.Int32),
        )
        assert err == 0 and result.ResultId.Id == wanted and result.ResultState == 1
        assert result.ResultContent[0].Value.Text.startswith("Scratch")
        _, missing, err = await rm.call_method(
            f"{ns}:GetResultById",
            ua.ResultIdDataType(Id="nope"),
            ua.Variant(0, ua.VariantType.Int32),
        )
        assert err != 0 and missing.ResultState == 0
        complete, count, _, results, err = await rm.call_method(
            f"{ns}:GetResultListFiltered",
            ua.Variant(0, ua.VariantType.Int32),
            ua.MeasIdDataType(Id=""),
            ua.PartIdDataType(Id=str(rig.next_part - 1)),
            ua.RecipeIdExternalDataType(Id=""),
            ua.RecipeIdInternalDataType(Id=""),
            ua.ConfigurationIdDataType(Id=""),
            ua.ConfigurationIdDataType(Id=""),
            ua.ProductIdDataType(Id=""),
            ua.JobIdDataType(Id=""),
            ua.Variant(10, ua.VariantType.UInt32),
            ua.Variant(0, ua.VariantType.UInt32),
            ua.Variant(1000, ua.VariantType.Int32),
        )
        assert (complete, count, err) == (True, 1, 0)
        assert results[0].PartId.Id == str(rig.next_part - 1)
        rcm = await vs.get_child(f"{ns}:RecipeManagement")
        out = await rcm.call_method(
            f"{ns}:GetRecipeListFiltered",
            ua.RecipeIdExternalDataType(Id=""),
            ua.ProductIdDataType(Id=""),
            ua.TriStateBooleanDataType.DONTCARE_2,
            ua.Variant(0, ua.VariantType.UInt32),
            ua.Variant(0, ua.VariantType.UInt32),
            ua.Variant(0, ua.VariantType.Int32),
        )
        assert [r.Id for r in out[3]] == ["default", "fine-pitch"]
        out = await rcm.call_method(
            f"{ns}:PrepareRecipe",
            ua.RecipeIdExternalDataType(Id="default"),
            ua.RecipeIdInternalDataType(Id=""),
        )
        assert out[0].Id == "default" and out[1] is True
        with pytest.raises(ua.uaerrors.BadNotFound):
            await rcm.call_method(
                f"{ns}:PrepareRecipe",
                ua.RecipeIdExternalDataType(Id="nope"),
                ua.RecipeIdInternalDataType(Id=""),
            )


async def test_review_round_trip(rig: Rig) -> None:
    """An operator's ReviewResult is stored beside the decision with the operator's name,
    and GetResultById then shows it (with the cited rule and the findings placed on the
    part); a review of an unknown result is refused."""
    (rid,) = rig.publish(1)
    async with _client(rig, OPERATOR) as c:
        await c.load_data_type_definitions()
        lin = await c.nodes.objects.get_child("2:Lineside")
        when = await lin.call_method("2:ReviewResult", rid, "pass", "", "dust, not a scratch")
        assert isinstance(when, dt.datetime)
        review = rig.results.reviews[rid]
        assert (review.verdict, review.defect_type, review.user) == ("pass", None, OPERATOR[0])
        assert review.comment == "dust, not a scratch"
        assert rig.results.records[rid].verdict == "reject"  # the original decision stays
        ns, vs = await _mv(c)
        rm = await vs.get_child(f"{ns}:ResultManagement")
        _, result, _ = await rm.call_method(
            f"{ns}:GetResultById", ua.ResultIdDataType(Id=rid), ua.Variant(0, ua.VariantType.Int32)
        )
        decision = json.loads(result.ResultContent[-1].Value)
        assert decision["verdict"] == "reject"
        assert decision["rule"] == "no scratches on the face"
        (finding,) = decision["findings"]
        assert (finding["zones"], finding["length_mm"]) == (["face"], 3.2)
        assert decision["review"] == {
            "verdict": "pass",
            "defect_type": None,
            "comment": "dust, not a scratch",
            "user": OPERATOR[0],
        }
        with pytest.raises(ua.uaerrors.BadNotFound):
            await lin.call_method("2:ReviewResult", "nope", "pass", "", "")
        with pytest.raises(ua.uaerrors.BadInvalidArgument):
            await lin.call_method("2:ReviewResult", rid, "maybe", "", "")


def _client_cert(tmp: Path, uri: str) -> tuple[Path, Path]:
    key = cert_gen.generate_private_key()
    cert = cert_gen.generate_self_signed_app_certificate(
        key,
        "panel",
        {},
        [x509.UniformResourceIdentifier(uri)],
        [ExtendedKeyUsageOID.CLIENT_AUTH],
    )
    cp, kp = tmp / "panel.der", tmp / "panel.pem"
    cp.write_bytes(cert.public_bytes(serialization.Encoding.DER))
    kp.write_bytes(cert_gen.dump_private_key_as_pem(key))
    return cp, kp


async def test_secured_endpoints_and_trust_list(rig: Rig, tmp_path: Path) -> None:
    """Basic256Sha256 and Aes256Sha256RsaPss SignAndEncrypt endpoints are offered; an untrusted
    client certificate is refused and saved to rejected/, a trusted one connects."""
    async with _client(rig) as c:
        eps = await c.get_endpoints()
    offered = {(e.SecurityPolicyUri.split("#")[1], e.SecurityMode) for e in eps}
    sae = ua.MessageSecurityMode.SignAndEncrypt
    assert {
        ("Basic256Sha256", sae),
        ("Aes128_Sha256_RsaOaep", sae),
        ("Aes256_Sha256_RsaPss", sae),
    } <= offered
    assert ("None", ua.MessageSecurityMode.None_) in offered
    uri = "urn:test:panel"
    cert, key = _client_cert(tmp_path, uri)

    async def connect() -> None:
        c = _client(rig, OPERATOR)
        c.application_uri = uri
        await c.set_security(security_policies.SecurityPolicyBasic256Sha256, str(cert), str(key))
        async with c:
            assert await c.get_node("ns=2;s=Lineside.Health.State").read_value()

    pki = rig.hmi.pki
    with capture_logs() as logs, pytest.raises(ua.uaerrors.BadCertificateUntrusted):
        await connect()
    assert any(e["event"] == "hmi_client_certificate_refused" for e in logs)
    rejected = list(pki.rejected.iterdir())
    assert len(rejected) == 1
    rejected[0].rename(pki.trusted / rejected[0].name)
    await rig.hmi.reload_trust_list()
    await connect()


async def test_a_repeating_defect_is_an_event_and_a_sentence_in_three_languages(rig: Rig) -> None:
    """A result that raises a repeat sets Repeats.* (count, words in en/de/ja) and fires a
    Lineside event of severity 700 whose Message is the sentence; its clearing, 300 and 0."""
    texts = {
        "en": "Repeating scratch 12 mm from the left end of the rim on 5 of the last 20 parts.",
        "de": "Wiederkehrend: Kratzer 12 mm vom linken Ende des Bereichs Rand auf 5 der letzten "
        "20 Teile.",
        "ja": "外周の左端から12 mmで傷が繰り返し発生(直近20個中5個)。",
    }
    notice = {"kind": "raised", "key": 1, "defect_type": "scratch", "zone": "rim", "texts": texts}
    async with _client(rig) as c:
        h = _Events()
        sub = await c.create_subscription(10, h)
        lin = await c.nodes.objects.get_child("2:Lineside")
        await sub.subscribe_events(lin, queuesize=100)
        for kind in ("raised", "cleared"):
            rec = dataclasses.replace(
                sample_record(rig.next_part),
                findings_json=json.dumps({"repeats": [{**notice, "kind": kind}]}),
            )
            rig.next_part += 1
            rig.results.add(rec)
            rig.hmi.publish(rec, None, {})
            await h.wait(
                lambda k=kind: any(e.Severity == (700 if k == "raised" else 300) for e in h.events)
            )
            active = await c.get_node("ns=2;s=Lineside.Repeats.Active").read_value()
            assert active == (1 if kind == "raised" else 0)
        repeat_events = [e for e in h.events if e.Severity in (700, 300)]
        assert [e.Message.Text for e in repeat_events] == [texts["en"], texts["en"]]
        de = await c.get_node("ns=2;s=Lineside.Repeats.TextDe").read_value()
        assert de == ua.LocalizedText(texts["de"], "de")
        assert await c.get_node("ns=2;s=Lineside.Repeats.Kind").read_value() == "cleared"
        await sub.delete()
