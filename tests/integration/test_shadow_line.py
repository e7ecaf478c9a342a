"""Shadow mode on the simulated line, and promoting the candidate by the audited command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tomlkit

from hil.line import run_line
from models.package import load_package
from node.__main__ import main
from node.config import DEFAULT_CONFIG, Config, load_config
from node.line.results import PartResult
from node.shadow import shadow_dir

DEMO = Path(__file__).resolve().parents[2] / "models" / "demo"


def _config(tmp_path: Path) -> Path:
    """configs/sim.toml, its state under ``tmp_path``, with the shipped package as the
    shadow candidate too (a copy: another path, the same model)."""
    doc = tomlkit.parse(DEFAULT_CONFIG.read_text())
    doc["node"]["state_dir"] = str(tmp_path / "state")
    doc["hmi"]["enabled"] = False
    doc["sim"]["defect_rate"] = 0.3
    doc["sim"]["seed"] = 17
    doc["inspection"]["model"]["package"] = str(DEMO)
    shadow = tomlkit.table()
    shadow["package"] = str(DEMO)
    shadow["queue"] = 64
    doc["inspection"]["shadow"] = shadow
    path = tmp_path / "line.toml"
    path.write_text(tomlkit.dumps(doc))
    return path


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(argv)
    out, err = capsys.readouterr()
    return int(info.value.code or 0), out, err


async def test_a_shadow_candidate_judges_beside_the_line_never_acts_and_is_promoted_on_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """60 parts judged by the shipped model with the same model as the shadow candidate:
    the candidate judged the parts the active model judged (its queue never filled), agreed
    on every one with the same score, and struck nothing (the belt saw exactly the active
    rejects). Its report says so. Promotion is refused with too few parts judged (one
    line, exit 2), then done with --min-parts: the config now names the candidate, pinned
    by its digest, with no shadow left; the old config is kept and the change is on
    record with who, why and the shadow figures."""
    config = _config(tmp_path)
    cfg = load_config(config)
    results: list[PartResult] = []
    report, _, sim = await run_line(cfg, 60, on_result=results.append)
    assert report["parts"] == 60 and report["missed_rejects"] == 0
    assert len(sim.world.hits) == sum(r.action == "rejected" for r in results)
    _check_records(cfg, results)
    _check_report_and_promotion(config, capsys)


def _check_records(cfg: Config, results: list[PartResult]) -> None:
    judged = {r.verdict.part_id: r for r in results if not r.verdict.fail_safe}
    assert len(judged) >= 50
    where = shadow_dir(cfg.node.state_dir, load_package(DEMO).sha256)
    rows = [json.loads(line) for line in (where / "judged.jsonl").read_text().splitlines()]
    assert {r["part_id"] for r in rows} == set(judged)
    for row in rows:
        active = judged[row["part_id"]].verdict
        assert row["agree"] and row["active"]["reject"] == active.reject
        assert row["candidate"]["score"] == pytest.approx(active.score, abs=1e-3)


def _check_report_and_promotion(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = load_config(config)
    digest = load_package(DEMO).sha256
    code, out, _ = _run(["shadow", "report", str(config)], capsys)
    assert code == 0
    shown = json.loads(out[out.index("{\n") :])
    assert shown["judged"] >= 50 and shown["agreement"] == 1.0
    assert shown["examples"] == [] and shown["candidate"]["sha256"] == digest

    before = config.read_text()
    argv = ["shadow", "promote", str(config), "--user", "qe-anna", "--reason", "retrained"]
    code, _, err = _run(argv, capsys)
    assert code == 2 and "--min-parts 500" in err and len(err.strip().splitlines()) == 1
    assert config.read_text() == before

    code, out, _ = _run([*argv, "--min-parts", "20"], capsys)
    assert code == 0
    done = json.loads(out[out.index("{\n") :])
    after = load_config(config)
    assert after.inspection.model.package == DEMO and after.inspection.model.sha256 == digest
    assert after.inspection.shadow.package is None
    assert Path(done["backup"]).read_text() == before
    history = (cfg.node.state_dir / "model-history.jsonl").read_text().splitlines()
    (entry,) = [json.loads(x) for x in history]
    assert entry["user"] == "qe-anna" and entry["reason"] == "retrained"
    assert entry["to"] == {"package": str(DEMO), "sha256": digest}
    assert entry["shadow"]["judged"] == shown["judged"] and entry["shadow"]["agreement"] == 1.0
    assert not entry["forced"]
