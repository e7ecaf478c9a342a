"""The model package: a directory with a manifest, the ONNX graphs and the reference weights.

::

    <package>/manifest.json     what the model is and how to feed it (below)
    <package>/detect.onnx       the in-cycle graph
    <package>/explain.onnx      one decoder step
    <package>/weights.pt        the DefectNet state dict (float16) for the torch reference

The manifest records the format version, the input (size, scale in mm per
pixel, the gray level separating part from belt, normalization), the defect
types, the vocabulary, the network's shape, thresholds calibrated on
validation data, metrics, the training data set's hash, the sha256 of
every other file and (optional) the size calibration fitted on validation
data. The graphs' inputs and outputs are described in ``models.graphs``.
``load_package`` verifies all of it and refuses a corrupt or mismatched
package with a ``PackageError`` that lists every problem.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from models.backend import BackendError
from models.captions import SPECIALS
from models.net.config import NetConfig
from models.sizing import SizeCalibration

FORMAT = "lineside-model"
FORMAT_VERSION = 2
"""2: the detect graph also gives ``length_px`` and the explain graph takes ``facts``
(see ``models.graphs``); a version-1 package must be retrained."""
MANIFEST_FILE = "manifest.json"
WEIGHTS_FILE = "weights.pt"


class PackageError(BackendError, ValueError):
    """A model package that cannot be used; the message lists every problem.

    A ``BackendError`` (no backend opens such a package) and a ``ValueError``.
    """


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Normalization(_Strict):
    """The network sees ``(gray / 255 - mean) / std``."""

    mean: float
    std: float = Field(gt=0)


class InputSpec(_Strict):
    """What the graphs take: a square grayscale crop of ``size_px`` at ``mm_per_px``."""

    size_px: int = Field(ge=32)
    channels: Literal[1] = 1
    mm_per_px: float = Field(gt=0)
    part_threshold: int = Field(ge=0, le=254)
    normalization: Normalization


class ThresholdSpec(_Strict):
    """Calibrated on validation data: image score (0..1), the pixel probability that seeds a
    region and the one it grows to, the distance (mm) within which pieces are one defect;
    and the smallest region reported (mm²)."""

    image_score: float = Field(gt=0, lt=1)
    pixel: float = Field(gt=0, lt=1)
    region: float = Field(gt=0, lt=1)
    merge_mm: float = Field(ge=0)
    min_region_area_mm2: float = Field(ge=0)


class DatasetSpec(_Strict):
    """The training data set: its folder name, content hash and image count."""

    name: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    images: int = Field(ge=0)


class Manifest(_Strict):
    """The whole manifest (``manifest.json``)."""

    format: Literal["lineside-model"]
    format_version: int
    created_utc: str
    input: InputSpec
    types: tuple[str, ...] = Field(min_length=1)
    vocabulary: tuple[str, ...]
    net: dict[str, Any]
    thresholds: ThresholdSpec
    metrics: dict[str, float]
    dataset: DatasetSpec
    training: dict[str, Any]
    graphs: dict[Literal["detect", "explain"], str]
    weights: str
    files: dict[str, str]
    size_calibration: SizeCalibration | None = None
    """How the size fact's length combines the size head and the main region, fitted on
    validation data (``models.sizing``); ``None``: the size head's length as it is."""

    @field_validator("vocabulary")
    @classmethod
    def _specials_first(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if v[: len(SPECIALS)] != SPECIALS:
            raise ValueError(f"must start with {list(SPECIALS)}")
        return v

    @field_validator("files")
    @classmethod
    def _hashes(cls, v: dict[str, str]) -> dict[str, str]:
        bad = [
            k for k, h in v.items() if len(h) != 64 or any(c not in "0123456789abcdef" for c in h)
        ]
        if bad:
            raise ValueError(f"not sha256 hex digests: {bad}")
        return v


@dataclass(frozen=True, slots=True)
class ModelPackage:
    """A verified package: its folder, manifest and network shape."""

    root: Path
    manifest: Manifest
    net: NetConfig

    def path(self, name: str) -> Path:
        """The file ``name`` inside the package."""
        return self.root / name

    @property
    def detect_path(self) -> Path:
        """The detect graph."""
        return self.root / self.manifest.graphs["detect"]

    @property
    def explain_path(self) -> Path:
        """The explanation step graph."""
        return self.root / self.manifest.graphs["explain"]

    @property
    def weights_path(self) -> Path:
        """The reference weights (torch state dict)."""
        return self.root / self.manifest.weights


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_manifest(root: str | Path, fields: dict[str, Any]) -> Manifest:
    """Hash the package's files, then validate and write the manifest.

    ``fields`` is every manifest field but ``format``, ``format_version`` and
    ``files``. Raises ``PackageError`` when the fields do not form a valid manifest.
    """
    base = Path(root)
    names = sorted({*fields["graphs"].values(), fields["weights"]})
    files = {n: sha256_file(base / n) for n in names}
    data = {"format": FORMAT, "format_version": FORMAT_VERSION, **fields, "files": files}
    try:
        manifest = Manifest.model_validate(data)
    except ValidationError as exc:
        raise PackageError(f"{base}: invalid manifest: {_problems(exc)}") from exc
    (base / MANIFEST_FILE).write_text(manifest.model_dump_json(indent=2) + "\n", encoding="utf-8")
    return manifest


def load_package(root: str | Path) -> ModelPackage:
    """Read and verify a package.

    Checks: the manifest parses and has every field with a valid value; the
    format and version are this code's; every graph and the weights are
    listed in ``files`` and exist, and every listed file's sha256 matches; the
    network shape agrees with the types and vocabulary. Raises
    ``PackageError`` listing every problem found.
    """
    base = Path(root)
    mpath = base / MANIFEST_FILE
    if not mpath.is_file():
        raise PackageError(f"{base}: not a model package (no {MANIFEST_FILE})")
    try:
        raw = json.loads(mpath.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PackageError(f"{mpath}: not valid JSON ({exc})") from exc
    if isinstance(raw, dict) and raw.get("format_version") not in (None, FORMAT_VERSION):
        raise PackageError(
            f"{mpath}: format_version {raw.get('format_version')!r}; "
            f"this lineside reads version {FORMAT_VERSION} (retrain the package with "
            "this version's models.train to upgrade it)"
        )
    try:
        manifest = Manifest.model_validate(raw)
    except ValidationError as exc:
        raise PackageError(f"{mpath}: invalid manifest: {_problems(exc)}") from exc
    problems: list[str] = []
    needed = {*manifest.graphs.values(), manifest.weights}
    for name in sorted(needed - set(manifest.files)):
        problems.append(f"{name}: used but not listed in files")
    for name, digest in sorted(manifest.files.items()):
        path = base / name
        if Path(name).is_absolute() or ".." in Path(name).parts:
            problems.append(f"{name}: file names must stay inside the package")
        elif not path.is_file():
            problems.append(f"{name}: missing")
        elif sha256_file(path) != digest:
            problems.append(f"{name}: sha256 mismatch (corrupt or altered)")
    net: NetConfig | None = None
    try:
        net = NetConfig.from_dict(manifest.net)
    except (TypeError, ValueError) as exc:
        problems.append(f"net: {exc}")
    if net is not None:
        if net.n_types != len(manifest.types):
            problems.append(f"net.n_types {net.n_types} != {len(manifest.types)} types")
        if net.vocab_size != len(manifest.vocabulary):
            problems.append(f"net.vocab_size {net.vocab_size} != {len(manifest.vocabulary)} tokens")
        if net.input_size_px != manifest.input.size_px:
            problems.append(f"net.input_size_px {net.input_size_px} != input.size_px")
    if problems or net is None:
        raise PackageError(f"{base}: refused: " + "; ".join(problems))
    return ModelPackage(base, manifest, net)


def _problems(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}" for e in exc.errors()
    )
