"""The decoder is grounded in the heads' facts; the size head's length is what the guard checks."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from models.data.geometry import ALL_LOCATIONS, SIZE_CLASSES, PartGeometry
from models.findings import ExplanationFacts, Region
from models.graphs import NO_LOCATION, NO_SIZE
from models.guard import grounding_for
from models.net.model import DefectNet
from models.package import ModelPackage, PackageError, load_package
from models.runtime.onnxruntime import OnnxRuntimeBackend
from models.train.loop import fact_ids, perturb_facts
from tests.unit.models.conftest import TINY_NET

N_TYPES = 6


def _part() -> PartGeometry:
    image = np.zeros((256, 256), dtype=np.uint8)
    image[32:224, 32:224] = 170
    return PartGeometry.of(image, 0.125, 60)


def test_decoder_logits_depend_on_the_fact_tokens() -> None:
    """The same image memory with other facts gives other next-token logits."""
    torch.manual_seed(0)
    net = DefectNet(replace(TINY_NET, vocab_size=20, n_types=N_TYPES)).eval()
    memory = torch.randn(2, TINY_NET.memory_len, TINY_NET.d_model)
    tokens = torch.ones(2, TINY_NET.max_len, dtype=torch.int64)
    a = net.decoder(tokens, memory, torch.tensor([[0, 0, 0], [0, 0, 0]]))
    b = net.decoder(tokens, memory, torch.tensor([[3, 8, 2], [0, 0, 0]]))
    assert not torch.allclose(a[0], b[0])
    torch.testing.assert_close(a[1], b[1])


def test_fact_ids_mark_unknown_facts_as_none() -> None:
    """Type, place and size indices of -1 become the none ids the decoder knows."""
    ids = fact_ids(torch.tensor([2, -1]), torch.tensor([4, -1]), torch.tensor([1, -1]), N_TYPES)
    assert ids.tolist() == [[2, 4, 1], [N_TYPES, NO_LOCATION, NO_SIZE]]


def test_perturbed_facts_are_plausible_neighbours() -> None:
    """With p=1 every known fact changes to another type, a neighbouring cell or the next
    size class; none ids stay; with p=0 nothing changes."""
    torch.manual_seed(0)
    n = 400
    facts = torch.stack(
        [
            torch.randint(0, N_TYPES, (n,)),
            torch.randint(0, 9, (n,)),
            torch.randint(0, 3, (n,)),
        ],
        dim=1,
    )
    facts[:20] = torch.tensor([N_TYPES, NO_LOCATION, NO_SIZE])
    assert torch.equal(perturb_facts(facts, N_TYPES, 0.0), facts)
    out = perturb_facts(facts, N_TYPES, 1.0)
    assert torch.equal(out[:20], facts[:20])
    known = out[20:], facts[20:]
    assert bool((known[0][:, 0] != known[1][:, 0]).all())
    assert bool(((known[0][:, 0] >= 0) & (known[0][:, 0] < N_TYPES)).all())
    rows, cols = known[0][:, 1] // 3 - known[1][:, 1] // 3, known[0][:, 1] % 3 - known[1][:, 1] % 3
    assert bool(((rows.abs() <= 1) & (cols.abs() <= 1)).all())
    assert bool(((known[0][:, 2] - known[1][:, 2]).abs() == 1).all())


def test_grounding_checks_size_against_the_given_length() -> None:
    """With the size head's length given, the size class is that length's, not the region's."""
    facts = ExplanationFacts("scratch", "upper left", 7.0, False, 1)
    region = Region((0, 0, 1, 1), (60, 60), 10, 1.0, 3.5, 0.5, "", False, 0.0, 0.9)
    assert grounding_for(facts, region, _part()).sizes == frozenset({"medium"})
    assert grounding_for(facts, region, _part(), length_mm=7.0).sizes == frozenset({"large"})


def test_explain_feeds_the_decoder_the_heads_facts(tiny_package: ModelPackage) -> None:
    """An anomalous detection gives the decoder the type head's choice, the main region's
    cell and the size class of the size head's length; the published facts carry that length."""
    pipe = OnnxRuntimeBackend(tiny_package, threads=1).pipeline
    seen: list[np.ndarray[Any, Any]] = []
    step = pipe._step

    def spy(memory: Any, tokens: Any, facts: Any) -> Any:
        seen.append(facts.copy())
        return step(memory, tokens, facts)

    pipe._step = spy
    image = np.zeros((128, 128), dtype=np.uint8)
    image[16:112, 16:112] = 170
    prob = np.zeros((128, 128), dtype=np.float32)
    prob[24:30, 24:40] = 0.99  # a blob in the upper left of the part
    probs = np.eye(len(pipe.types), dtype=np.float32)[3]
    memory = np.zeros((TINY_NET.memory_len, TINY_NET.d_model), dtype=np.float32)
    d = pipe._post(image, prob, 2.0, probs, memory, 7.0)
    assert d.main is not None and d.main.location == "upper left"
    assert d.main.length_mm < 2.5  # the map's extent says small; the size head says large
    assert d.fact_ids == (3, ALL_LOCATIONS.index("upper left"), SIZE_CLASSES.index("large"))
    assert d.facts.size_mm == 7.0
    (e,) = pipe.explain([d])
    assert seen[0].tolist() == [list(d.fact_ids)]
    assert e.facts == d.facts


def test_a_version_1_package_is_refused_with_how_to_upgrade(
    tiny_package: ModelPackage, tmp_path: Path
) -> None:
    """A format 1 package (no fact input to the decoder) is refused, naming the version and
    telling to retrain."""
    root = tmp_path / "old"
    shutil.copytree(tiny_package.root, root)
    manifest = json.loads((root / "manifest.json").read_text())
    (root / "manifest.json").write_text(json.dumps({**manifest, "format_version": 1}))
    with pytest.raises(PackageError, match=r"format_version 1.*reads version 2.*retrain"):
        load_package(root)
