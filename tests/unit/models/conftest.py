"""Fixtures for the learned model: a tiny synthetic data set and a tiny package trained on it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from models.data.synthset import write_synth
from models.net.config import NetConfig
from models.package import ModelPackage
from models.train.build import train_package
from models.train.loop import TrainConfig

TINY_NET = NetConfig(
    input_size_px=128, widths=(8, 8, 16, 16), d_model=32, n_heads=2, n_layers=1, ff_dim=64, top_k=4
)
TINY_TRAIN = TrainConfig(
    steps=6,
    batch_size=4,
    val_every=3,
    patience=2,
    threads=1,
    progress=False,
    net=TINY_NET,
    min_type_examples=1,  # the tiny set keeps one image of each type after its holdout
)


@pytest.fixture(autouse=True)
def one_torch_thread() -> None:
    """Keep torch to one thread: the test machine's two cores are shared."""
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 128 px moulded-plastic category: 8 good, 3 good tests and 2 of each defect kind."""
    root = tmp_path_factory.mktemp("synth")
    write_synth(
        root,
        seed=5,
        families=["moulded_plastic"],
        n_train_good=8,
        n_test_good=3,
        n_test_per_kind=2,
        size_px=128,
        part_size_mm=14.0,
        progress=False,
    )
    return root / "moulded_plastic"


@pytest.fixture(scope="session")
def tiny_package(tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> ModelPackage:
    """A package trained for a few steps on the tiny data set (not useful, but complete)."""
    out = tmp_path_factory.mktemp("pkg") / "tiny"
    return train_package(tiny_dataset, out, TINY_TRAIN).package
