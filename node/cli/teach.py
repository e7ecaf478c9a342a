"""Teaching the golden template from good parts (the classical backend's training)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import structlog

from models.classical import TemplateModel
from node.config import Config
from node.errors import ModelError
from node.line.roi import crop_part

log = structlog.get_logger(__name__)

MIN_TEACH_PARTS = 8


def teach_template(
    cfg: Config,
    frames: Sequence[npt.NDArray[np.uint8]],
    out: Path,
    progress: Iterable[int] | None = None,
) -> int:
    """Crop every frame to its part, fit the template, save it to ``out``.

    Frames where no whole part is found are skipped with a logged reason.
    Returns the number of parts used. Raises ``ModelError`` with fewer than
    ``MIN_TEACH_PARTS`` usable parts.
    """
    insp = cfg.inspection
    crops = []
    for i in progress if progress is not None else range(len(frames)):
        try:
            crop, _ = crop_part(frames[i], insp.roi_size_px, insp.belt_threshold)
        except ValueError as exc:
            log.warning("teach_image_skipped", index=i, reason=str(exc))
            continue
        crops.append(crop)
    if len(crops) < MIN_TEACH_PARTS:
        raise ModelError(
            f"teach: only {len(crops)} usable good parts (need at least {MIN_TEACH_PARTS})"
        )
    model = TemplateModel.fit(crops, shift_px=insp.classical.shift_px)
    out.parent.mkdir(parents=True, exist_ok=True)
    model.save(out)
    log.info("template_taught", parts=len(crops), path=str(out))
    return len(crops)
