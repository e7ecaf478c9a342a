"""Training: the losses, the optimisation loop with validation and early stopping, calibration.

``fit`` trains a ``DefectNet`` on one MVTec-layout category and returns the
trained network with everything a model package records about it
(vocabulary, types, calibrated thresholds, validation metrics). Packaging
and export live in ``models.train.build`` and ``models.export``.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import structlog
import torch
import torch.nn.functional as F
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from models.captions import Vocabulary
from models.data.geometry import PartGeometry, hysteresis, measure_regions, size_class
from models.data.mvtec import MvtecDataset
from models.graphs import NO_LOCATION, NO_SIZE
from models.net.config import NetConfig
from models.net.model import DefectNet, DetectOutput
from models.train.metrics import PixelAuroc, auroc, best_threshold, false_alarm_threshold
from models.train.samples import Batch, TrainingData

log = structlog.get_logger(__name__)

NORM_MEAN = 0.4
"""Images are fed as ``(gray / 255 - NORM_MEAN) / NORM_STD``."""
NORM_STD = 0.25


@dataclass(frozen=True, slots=True)
class TrainConfig:
    """Knobs of one training run.

    ``steps`` is the most optimiser steps; ``time_limit_s`` (seconds) may stop
    the optimisation loop earlier (loading the data, calibration and export
    come on top) and the learning rate anneals to fit whichever ends first;
    validation runs every ``val_every`` steps and training stops after
    ``patience`` validations without improvement of the validation loss.
    ``holdout_fraction`` of the good test images and of each defect type is set aside
    before anything reads the data set (``models.data.holdout``: never trained,
    validated or calibrated on; ``lineside eval`` scores it); a type with fewer than
    ``min_type_examples`` labelled images left is not guessed at but trained as an
    anomaly of unknown type (with none at all, the model learns from good images and
    synthetic anomalies alone); ``val_fraction``
    of each type (and of the good images) of the rest is held out for validation
    and calibration. ``p_good``/``p_paste`` are the shares of good
    and pasted-anomaly images in a batch (the rest are labelled defects);
    ``p_transplant`` of the labelled defects drawn are moved onto another good image
    first (``models.data.anomalies.transplant``: with 20 labelled images per type,
    starting from the demo package, it raised holdout type accuracy on a family the
    demo never saw from 0.84 to 0.96); ``fixed_place_types`` are the types that
    belong to a place on the part (a missing feature), which a transplant keeps in place;
    ``surface`` says the images are crops of a material with no up or down (good images
    are then also trained mirrored and turned).
    ``fact_weight`` weighs the training-only probe that makes the decoder's global
    memory token tell the place and size class of the main anomaly;
    ``max_false_alarm`` bounds the share of the held-out good (validation) images the
    calibrated image threshold calls defective; it needs about ``1 / max_false_alarm``
    of them to be checked at all (a warning says so).
    ``unknown_type_weight`` the type loss of pasted ("unknown anomaly") samples (0.2:
    at 0.5 the head called 12 % of real defects of taught types "unknown anomaly" with
    5 labels per type, at 0.2 4 %, while a type too rare to teach stayed unknown in 40
    of 40 test images);
    ``size_weight`` the size head's loss (smooth L1 on the log length).
    The decoder is taught with the true facts as its fact tokens, each replaced
    by a plausible wrong one (another type, a neighbouring cell, the next size
    class) with probability ``fact_noise``, so it learns to state the facts it
    is given while still reading the image.
    ``threads`` bounds torch's CPU threads (default 1: on a shared two-core
    machine a second thread mostly spins waiting; measured 0.86 s/step with one
    thread against 2.2 s with two). ``data_seed`` records the seed of
    a synthetic training set (benchmarks refuse to test on that seed) and
    ``part_size_mm`` its part size; both are only recorded.
    """

    steps: int = 3000
    batch_size: int = 16
    lr: float = 2e-3
    weight_decay: float = 1e-4
    val_every: int = 250
    patience: int = 4
    max_false_alarm: float = 0.01
    holdout_fraction: float = 0.3
    min_type_examples: int = 3
    val_fraction: float = 0.2
    p_good: float = 0.3
    p_paste: float = 0.2
    p_transplant: float = 0.8
    fixed_place_types: tuple[str, ...] = ("missing_feature",)
    surface: bool = False
    shift_px: int = 4
    seed: int = 0
    threads: int = 1
    time_limit_s: float | None = None
    mm_per_px: float = 0.125
    part_threshold: int = 60
    type_weight: float = 0.5
    caption_weight: float = 0.5
    score_weight: float = 0.3
    fact_weight: float = 0.5
    unknown_type_weight: float = 0.2
    size_weight: float = 1.0
    fact_noise: float = 0.1
    progress: bool = True
    data_seed: int | None = None
    part_size_mm: float | None = None
    net: NetConfig = field(default_factory=NetConfig)
    init_from: str | None = None
    """A package to start from (fine-tuning): its network's shape replaces ``net``, and
    every weight whose name and shape still fit (all but the type head and the
    vocabulary's, when the types or captions changed) starts from the package's."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        d = asdict(self)
        d["net"] = self.net.to_dict()
        return d


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Calibrated on validation data: ``image_score`` (0..1 top-k score at which a part is
    anomalous), ``pixel`` (probability at which a pixel seeds a region), ``region``
    (probability to which a region grows from its seeds) and ``merge_mm`` (pieces of
    the map closer than this are one defect)."""

    image_score: float
    pixel: float
    region: float
    merge_mm: float


@dataclass(frozen=True, slots=True)
class FitResult:
    """A trained network and what a package records about it."""

    net: DefectNet
    vocab: Vocabulary
    types: tuple[str, ...]
    thresholds: Thresholds
    metrics: dict[str, float]
    steps: int
    minutes: float


def to_input(images: np.ndarray[Any, Any]) -> torch.Tensor:
    """uint8 ``(B, H, W)`` -> normalized float ``(B, 1, H, W)``, channels-last in memory
    (the layout ``fit`` trains in; see there)."""
    x = torch.from_numpy(np.ascontiguousarray(images)).to(torch.float32)
    x = ((x / 255.0 - NORM_MEAN) / NORM_STD)[:, None]
    return x.contiguous(memory_format=torch.channels_last)


def losses(
    net: DefectNet, batch: Batch, cfg: TrainConfig, out: DetectOutput | None = None
) -> dict[str, torch.Tensor]:
    """The loss terms on one batch (``total`` is their weighted sum).

    The segmentation loss is taken at half the input resolution (cheaper)
    against the mask max-pooled to it.
    """
    if out is None:
        out = net.detect(to_input(batch.images))
    h, w = batch.images.shape[1:]
    logits = F.interpolate(
        out.map_logits, size=(h // 2, w // 2), mode="bilinear", align_corners=False
    )[:, 0]
    masks = torch.from_numpy(batch.masks).to(torch.float32)[:, None]
    # Max, not mean: a one-pixel scratch stays a full-strength target at half resolution.
    target = F.max_pool2d(masks, 2)[:, 0]
    has_mask = torch.from_numpy(batch.has_mask)
    anomalous = torch.from_numpy(batch.anomalous)
    zero = logits.sum() * 0.0
    terms: dict[str, torch.Tensor] = {}
    if bool(has_mask.any()):
        lg, tg = logits[has_mask], target[has_mask]
        p = torch.sigmoid(lg)
        bce = F.binary_cross_entropy_with_logits(lg, tg, reduction="none")
        pt = p * tg + (1 - p) * (1 - tg)
        focal = (bce * (1 - pt) ** 2).mean() * 10.0
        inter = (p * tg).sum(dim=(1, 2))
        dice = 1 - (2 * inter + 1) / (p.sum(dim=(1, 2)) + tg.sum(dim=(1, 2)) + 1)
        terms["seg"] = focal + dice.mean()
    else:
        terms["seg"] = zero
    terms["score"] = F.binary_cross_entropy(
        out.score.clamp(1e-5, 1 - 1e-5), anomalous.to(torch.float32)
    )
    types = torch.from_numpy(batch.types)
    known = types >= 0
    if bool(known.any()):
        # Pasted anomalies teach "unknown anomaly", at a lower weight so the class
        # does not swallow real defects the head is unsure about.
        per = F.cross_entropy(out.type_logits[known], types[known], reduction="none")
        unknown = net.cfg.n_types - 1
        w = torch.where(types[known] == unknown, cfg.unknown_type_weight, 1.0)
        terms["type"] = (per * w).sum() / w.sum()
    else:
        terms["type"] = zero
    locs = torch.from_numpy(batch.locations)
    sizes = torch.from_numpy(batch.sizes)
    with_facts = locs >= 0
    if bool(with_facts.any()):
        fact_logits = net.fact_head(out.memory[:, 0][with_facts])
        terms["facts"] = F.cross_entropy(fact_logits[:, :9], locs[with_facts]) + F.cross_entropy(
            fact_logits[:, 9:], sizes[with_facts]
        )
    else:
        terms["facts"] = zero
    lengths = torch.from_numpy(batch.lengths_px)
    measured = lengths > 0
    if bool(measured.any()):
        terms["size"] = F.smooth_l1_loss(
            out.log_length[measured], torch.log(lengths[measured]), beta=0.1
        )
    else:
        terms["size"] = zero
    tokens = torch.from_numpy(batch.tokens)
    captioned = tokens[:, 1] != 0
    if bool(captioned.any()):
        facts = fact_ids(types, locs, sizes, net.cfg.n_types)
        if net.training and cfg.fact_noise > 0:
            facts = perturb_facts(facts, net.cfg.n_types, cfg.fact_noise)
        terms["caption"] = net.decoder.loss(
            tokens[captioned], out.memory[captioned], facts[captioned]
        )
    else:
        terms["caption"] = zero
    terms["total"] = (
        terms["seg"]
        + cfg.score_weight * terms["score"]
        + cfg.type_weight * terms["type"]
        + cfg.caption_weight * terms["caption"]
        + cfg.fact_weight * terms["facts"]
        + cfg.size_weight * terms["size"]
    )
    return terms


def fact_ids(
    types: torch.Tensor, locations: torch.Tensor, sizes: torch.Tensor, n_types: int
) -> torch.Tensor:
    """The decoder's fact ids ``(N, 3)`` from type, location and size indices (-1: none)."""
    return torch.stack(
        [
            torch.where(types >= 0, types, n_types),
            torch.where(locations >= 0, locations, NO_LOCATION),
            torch.where(sizes >= 0, sizes, NO_SIZE),
        ],
        dim=1,
    )


def perturb_facts(facts: torch.Tensor, n_types: int, p: float) -> torch.Tensor:
    """``facts`` with each known fact swapped, with probability ``p``, for a plausible
    wrong one: another type, a neighbouring grid cell, the neighbouring size class."""
    out = facts.clone()
    n = facts.shape[0]
    t, loc, size = facts[:, 0], facts[:, 1], facts[:, 2]
    flip = (torch.rand(n) < p) & (t < n_types)
    other = (t + torch.randint(1, max(2, n_types), (n,))) % n_types
    out[:, 0] = torch.where(flip, other, t)
    flip = (torch.rand(n) < p) & (loc < NO_LOCATION)
    row = (loc // 3 + torch.randint(-1, 2, (n,))).clamp(0, 2)
    col = (loc % 3 + torch.randint(-1, 2, (n,))).clamp(0, 2)
    out[:, 1] = torch.where(flip, row * 3 + col, loc)
    flip = (torch.rand(n) < p) & (size < NO_SIZE)
    step = torch.where(size == 0, 1, torch.where(size == 2, -1, 2 * torch.randint(0, 2, (n,)) - 1))
    out[:, 2] = torch.where(flip, size + step, size)
    return out


def learning_rate(cfg: TrainConfig, step: int, elapsed_s: float) -> float:
    """Linear warm-up over the first 5 % of training, then cosine decay to 2 % of ``cfg.lr``.

    Progress is the larger of the step fraction and the fraction of the time
    limit used, so a run cut short by its time limit still ends annealed.
    """
    progress = step / max(1, cfg.steps)
    if cfg.time_limit_s:
        progress = max(progress, elapsed_s / cfg.time_limit_s)
    progress = min(1.0, progress)
    if progress < 0.05:
        return cfg.lr * max(0.05, progress / 0.05)
    cos = 0.5 * (1.0 + math.cos(math.pi * (progress - 0.05) / 0.95))
    return cfg.lr * (0.02 + 0.98 * cos)


def train_step(
    net: DefectNet, opt: torch.optim.Optimizer, batch: Batch, cfg: TrainConfig
) -> dict[str, float]:
    """One optimiser step on ``batch``; the loss terms before the step."""
    terms = losses(net, batch, cfg)
    opt.zero_grad(set_to_none=True)
    terms["total"].backward()  # type: ignore[no-untyped-call]
    torch.nn.utils.clip_grad_norm_(net.parameters(), 5.0)
    opt.step()
    return {k: float(v.detach()) for k, v in terms.items()}


@torch.inference_mode()
def validate(
    net: DefectNet, batches: list[Batch], cfg: TrainConfig
) -> tuple[
    dict[str, float], list[tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]], np.ndarray[Any, Any]
]:
    """Mean validation losses, per batch ``(prob maps, masks)`` and the image scores."""
    net.eval()
    sums: dict[str, float] = {}
    maps: list[tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]] = []
    scores: list[float] = []
    for b in batches:
        out = net.detect(to_input(b.images))
        for k, v in losses(net, b, cfg, out).items():
            sums[k] = sums.get(k, 0.0) + float(v) * len(b.images)
        maps.append((net.upsampled_map(out.map_logits)[:, 0].numpy(), b.masks))
        scores += out.score.tolist()
    n = sum(len(b.images) for b in batches)
    net.train()
    return {k: v / n for k, v in sums.items()}, maps, np.array(scores)


def learned_types(dataset: MvtecDataset, min_examples: int) -> tuple[str, ...]:
    """The defect types with at least ``min_examples`` labelled images: the type head learns
    these; the others are anomalies of unknown type (logged)."""
    learned = []
    for t in dataset.defect_types:
        n = len(dataset.select("test", t))
        if n >= min_examples:
            learned.append(t)
        else:
            log.warning("type_not_learned", defect_type=t, images=n, needs=min_examples)
    return tuple(learned)


def fit(dataset: MvtecDataset, cfg: TrainConfig) -> FitResult:
    """Train on ``dataset``; see ``TrainConfig``. Raises ``ValueError`` for an unusable data set."""
    t0 = time.monotonic()
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    rng = np.random.default_rng(cfg.seed)
    user_captions = [s.caption for s in dataset.samples if s.caption]
    learned = learned_types(dataset, cfg.min_type_examples)
    types = (*learned, "unknown anomaly")
    vocab = Vocabulary.build(types, user_captions)
    start = _start_from(cfg.init_from) if cfg.init_from is not None else None
    base_net = start.net if start is not None else cfg.net
    netcfg = replace(base_net, vocab_size=len(vocab.tokens), n_types=len(types))
    data = TrainingData(
        dataset,
        vocab,
        netcfg.max_len,
        cfg.mm_per_px,
        cfg.part_threshold,
        cfg.val_fraction,
        cfg.seed,
        learned,
        cfg.fixed_place_types,
        cfg.surface,
    )
    if data.image_shape != (netcfg.input_size_px, netcfg.input_size_px):
        raise ValueError(
            f"images are {data.image_shape}, the network takes "
            f"{netcfg.input_size_px} x {netcfg.input_size_px}; crop or resize the data set"
        )
    # Channels-last convolutions run the encoder's forward and backward ~1.4x faster on
    # this CPU (oneDNN; measured 0.37-0.50 s against 0.62-0.79 s per batch of 16), so
    # a time-limited run takes more steps. The layout changes no result but rounding.
    net = DefectNet(netcfg)
    if start is not None:
        _load_fitting(net, start, types, vocab.tokens)
    net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # not in the stubs
    net.train()
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    val_batches = data.validation_batches(32)
    t_train = time.monotonic()
    best_loss, best_state, stale, step = math.inf, copy.deepcopy(net.state_dict()), 0, 0
    columns = (
        TextColumn("[bold]train"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} {task.fields[info]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, disable=not cfg.progress) as bar:
        task = bar.add_task("train", total=cfg.steps, info="")
        while step < cfg.steps:
            batch = data.draw(
                rng, cfg.batch_size, cfg.p_good, cfg.p_paste, cfg.shift_px, cfg.p_transplant
            )
            for group in opt.param_groups:
                group["lr"] = learning_rate(cfg, step, time.monotonic() - t_train)
            terms = train_step(net, opt, batch, cfg)
            step += 1
            info = " ".join(f"{k}={v:.3f}" for k, v in terms.items())
            bar.update(task, advance=1, info=info)
            out_of_time = (
                cfg.time_limit_s is not None and time.monotonic() - t_train > cfg.time_limit_s
            )
            if step % cfg.val_every == 0 or step == cfg.steps or out_of_time:
                vloss, _, _ = validate(net, val_batches, cfg)
                log.info("validated", step=step, **{k: round(v, 4) for k, v in vloss.items()})
                if vloss["total"] < best_loss:
                    best_loss, best_state, stale = (
                        vloss["total"],
                        copy.deepcopy(net.state_dict()),
                        0,
                    )
                else:
                    stale += 1
                if stale >= cfg.patience:
                    log.info("early_stopped", step=step, best_val_loss=round(best_loss, 4))
                    break
            if out_of_time:
                log.warning("training_time_limit_reached", step=step)
                break
    net.load_state_dict(best_state)
    if best_loss == math.inf:  # never validated (no step taken, or no finite loss)
        best_loss = validate(net, val_batches, cfg)[0]["total"]
    if not math.isfinite(best_loss):
        raise ValueError(f"training diverged: the validation loss is {best_loss}")
    # Export and packaging take the default layout (torch's stubs lack ``memory_format``).
    net.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
    net.eval()
    thresholds, metrics = calibrate(net, data, val_batches, cfg)
    metrics["val_loss"] = best_loss
    minutes = (time.monotonic() - t0) / 60.0
    return FitResult(net, vocab, data.types, thresholds, metrics, step, minutes)


@dataclass(frozen=True, slots=True)
class StartPackage:
    """What fine-tuning takes from a package: its network's shape, weights, type names
    and vocabulary (rows of type- and token-indexed weights are matched by name)."""

    net: NetConfig
    state: dict[str, torch.Tensor]
    types: tuple[str, ...]
    tokens: tuple[str, ...]


def _start_from(package: str) -> StartPackage:
    """The network shape, weights and names of ``package``. Raises ``PackageError``."""
    from models.package import load_package

    pkg = load_package(package)
    state = torch.load(pkg.weights_path, map_location="cpu", weights_only=True)
    floats = {k: v.to(torch.float32) if v.is_floating_point() else v for k, v in state.items()}
    return StartPackage(pkg.net, floats, pkg.manifest.types, pkg.manifest.vocabulary)


_TYPE_ROWS = ("type_head.2.weight", "type_head.2.bias", "decoder.fact_type.weight")
"""Weights with one row per defect type (``decoder.fact_type`` adds a last "no type" row)."""
_TOKEN_ROWS = ("decoder.embed.weight", "decoder.head.weight", "decoder.head.bias")
"""Weights with one row per vocabulary token."""


def _load_fitting(
    net: DefectNet,
    start: StartPackage,
    types: tuple[str, ...],
    tokens: tuple[str, ...],
) -> None:
    """Load ``start``'s weights into ``net``: every tensor of the same name and shape, and
    the per-type and per-token rows of the types and tokens both know by name (a type
    the package did not know keeps its fresh row, whatever its index)."""
    own = net.state_dict()
    fitting: dict[str, torch.Tensor] = {}
    for key, value in start.state.items():
        if key not in own:
            continue
        if key in _TYPE_ROWS or key in _TOKEN_ROWS:
            old_names, new_names = (
                (start.types, types) if key in _TYPE_ROWS else (start.tokens, tokens)
            )
            if key == "decoder.fact_type.weight":  # the "no type" row matches itself
                old_names, new_names = (*old_names, "\0none"), (*new_names, "\0none")
            if value.shape[0] != len(old_names) or own[key].shape[1:] != value.shape[1:]:
                continue
            rows = own[key].clone()
            for i, name in enumerate(new_names):
                if name in old_names:
                    rows[i] = value[old_names.index(name)]
            fitting[key] = rows
        elif own[key].shape == value.shape:
            fitting[key] = value
    net.load_state_dict(fitting, strict=False)
    log.info(
        "started_from_package",
        weights=len(fitting),
        fresh_weights=sorted(set(own) - set(fitting)),
        new_types=[t for t in types if t not in start.types],
        new_tokens=sum(t not in start.tokens for t in tokens),
    )


def calibrate(
    net: DefectNet, data: TrainingData, val_batches: list[Batch], cfg: TrainConfig
) -> tuple[Thresholds, dict[str, float]]:
    """Image and pixel thresholds from the validation set, and its metrics."""
    _, maps, scores = validate(net, val_batches, cfg)
    labels = np.concatenate([b.anomalous for b in val_batches])
    # The operating point: the best separation on validation, raised where needed so that
    # at most ``max_false_alarm`` of the held-out good images are called defective.
    separating = best_threshold(scores, labels)
    limited = false_alarm_threshold(scores, labels, cfg.max_false_alarm)
    image_thr = min(max(separating, limited), 1.0 - 1e-6)
    goods = scores[~labels]
    if goods.size * cfg.max_false_alarm < 1.0:
        log.warning(
            "false_alarm_target_needs_more_good_images",
            target=cfg.max_false_alarm,
            good_images=int(goods.size),
            needs=math.ceil(1.0 / cfg.max_false_alarm),
        )
    # Pixel threshold: the best Dice over the validation defects that have masks.
    candidates = np.linspace(0.1, 0.9, 17)
    inter = np.zeros_like(candidates)
    denom = np.zeros_like(candidates)
    pix = PixelAuroc()
    for (prob, masks), b in zip(maps, val_batches, strict=True):
        pix.add(prob, masks)
        for i, thr in enumerate(candidates):
            sel = b.has_mask & b.anomalous
            pred = prob[sel] >= thr
            inter[i] += float((pred & masks[sel]).sum())
            denom[i] += float(pred.sum() + masks[sel].sum())
    dice = 2 * inter / np.maximum(denom, 1)
    pixel_thr = float(candidates[int(np.argmax(dice))])
    region_thr, merge_mm, fact_agreement = _calibrate_regions(data, maps, pixel_thr, cfg)
    metrics = {
        "val_image_auroc": auroc(scores, labels)
        if 0 < labels.sum() < labels.size
        else float("nan"),
        "val_pixel_auroc": pix.value(),
        "val_pixel_dice": float(dice.max()),
        "val_region_fact_agreement": fact_agreement,
        "val_images": float(labels.size),
        "val_good_images": float(goods.size),
        "val_false_alarm_rate": float((goods >= image_thr).mean()) if goods.size else float("nan"),
        "val_detection_rate": float((scores[labels] >= image_thr).mean())
        if labels.any()
        else float("nan"),
        "max_false_alarm": cfg.max_false_alarm,
    }
    return Thresholds(image_thr, pixel_thr, region_thr, merge_mm), metrics


def _calibrate_regions(
    data: TrainingData,
    maps: list[tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]],
    pixel_thr: float,
    cfg: TrainConfig,
) -> tuple[float, float, float]:
    """The growth threshold and merge distance whose main region best matches the ground
    truth's place and size class on the validation defects; with that agreement (0..1)."""
    probs = [p for batch, _ in maps for p in batch]
    cases = [(it, p) for it, p in zip(data.val, probs, strict=True) if it.facts is not None]
    lows = sorted({min(v, pixel_thr) for v in (0.1, 0.2, 0.3, 0.4, 0.5)})
    merges = (3.0, 5.0, 7.5, 10.0, 15.0)
    if not cases:
        return lows[0], merges[0], float("nan")
    parts = [
        PartGeometry.of(it.image, cfg.mm_per_px, cfg.part_threshold, edges=False) for it, _ in cases
    ]
    best = (-1.0, lows[0], merges[0])
    for low in lows:
        masks = [hysteresis(p, pixel_thr, low) for _, p in cases]
        for merge in merges:
            hits = 0
            for (it, p), part, mask in zip(cases, parts, masks, strict=True):
                m = mask if mask.any() else p >= 0.5 * float(p.max())
                regions = measure_regions(m, p, part, cfg.mm_per_px, 0.3, merge_mm=merge)
                regions = regions or measure_regions(m, p, part, cfg.mm_per_px, merge_mm=merge)
                if regions and it.facts is not None:
                    r = max(regions, key=lambda r: r.area_px)
                    hits += int(r.location == it.facts.location)
                    hits += int(size_class(r.length_mm) == it.facts.size)
            score = hits / (2 * len(cases))
            if score > best[0]:
                best = (score, low, merge)
    return best[1], best[2], best[0]
