"""The anomaly map kept with a record: small, faithful to its threshold, and safe to read."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from node.audit.heat import FULL_SCALE, HEAT_PX, decode_heat, encode_heat
from node.audit.store import record_from_result
from tests.unit.node.audit import factories as F


def test_a_map_round_trips_in_threshold_units_within_quantisation() -> None:
    """A 256² map with a 2×threshold blob comes back at 64², the blob at 2.0 and the
    background at 0, within one quantisation step."""
    m = np.zeros((256, 256), np.float32)
    m[64:128, 128:192] = 12.0  # twice a threshold of 6
    heat = encode_heat(m, 6.0)
    back = decode_heat(heat)
    assert back is not None and back.shape == (HEAT_PX, HEAT_PX)
    assert heat["shape"] == [256, 256] and heat["full_scale"] == FULL_SCALE
    step = FULL_SCALE / 255
    assert abs(float(back[16:32, 32:48].mean()) - 2.0) < step
    assert float(back[:16].max()) < step
    assert len(heat["png"]) < 4000


def test_non_finite_values_count_as_nothing_and_big_values_are_clipped() -> None:
    """NaN and infinities become 0; anything past full scale is stored as full scale."""
    m = np.full((32, 48), np.nan, np.float32)
    m[:, :8] = np.inf
    m[:, 8:16] = 1e9
    back = decode_heat(encode_heat(m, 1.0))
    assert back is not None and back.shape == (32, 48)  # small maps are kept as they are
    assert float(back[:, :8].max()) == 0.0
    assert float(back[:, 8:16].min()) == pytest.approx(FULL_SCALE)
    assert float(back[:, 16:].max()) == 0.0


@pytest.mark.parametrize(
    ("shape", "threshold"), [((8,), 1.0), ((0, 4), 1.0), ((4, 4), 0.0), ((4, 4), float("nan"))]
)
def test_bad_input_is_refused(shape: tuple[int, ...], threshold: float) -> None:
    """A map that is not 2-D or a threshold that is not a positive number raises ValueError."""
    with pytest.raises(ValueError):
        encode_heat(np.zeros(shape, np.float32), threshold)


@pytest.mark.parametrize("junk", [None, {}, {"png": "not base64!"}, {"png": "aGVsbG8="}, "x"])
def test_decoding_something_else_gives_none(junk: object) -> None:
    """Anything but what encode_heat made decodes to None, never an exception."""
    assert decode_heat(junk) is None


def test_a_record_keeps_the_map_only_when_asked() -> None:
    """record_from_result stores ``heat`` under findings_json with heat_threshold, and
    nothing without it (the recorder asks only for parts whose image is kept)."""
    result = F.part_result(3, "scratch")
    f = result.verdict.findings
    assert f is not None
    amap = np.zeros((40, 40), np.float32)
    amap[10:20, 10:20] = 6.0
    result = dataclasses.replace(
        result,
        verdict=dataclasses.replace(
            result.verdict, findings=dataclasses.replace(f, anomaly_map=amap)
        ),
    )
    kept = record_from_result(
        result, run_id="r", thresholds=F.THRESHOLDS, heat_threshold=6.0, **F.MODEL
    )
    plain = record_from_result(result, run_id="r", thresholds=F.THRESHOLDS, **F.MODEL)
    heat = decode_heat(json.loads(kept.findings_json)["heat"])
    assert heat is not None and abs(float(heat[10:20, 10:20].mean()) - 1.0) < 0.01
    assert "heat" not in json.loads(plain.findings_json)
