"""The model package: a directory with a manifest, the ONNX graphs and the reference weights.

::

    <package>/manifest.json     what the model is and how to feed it (below), and its digest
    <package>/detect.onnx       the in-cycle graph
    <package>/explain.onnx      one decoder step
    <package>/weights.pt        the DefectNet state dict (float16) for the torch reference
    <package>/signature.json    optional: an ed25519 signature of the digest (``models.signing``)
    <package>/check/*.png       check images: a few good and defective parts of the package's
                                input size, run through a GPU runtime and ONNX Runtime at load
                                (``models.runtime.parity``); listed in ``check`` and ``files``

The manifest records the format version, the input (size, scale in mm per
pixel, the gray level separating part from belt, normalization), the defect
types, the vocabulary, the network's shape, thresholds calibrated on
validation data, metrics, the training data set's hash, the sha256 of
every other file and (optional) the size calibration fitted on validation
data. The graphs' inputs and outputs are described in ``models.graphs``.

The manifest's own content is covered too: its ``package_sha256`` is the sha256
of every other key of the manifest in canonical JSON (keys sorted, no
whitespace, ``","`` and ``":"`` as separators, ASCII only, no NaN or infinity;
``manifest_sha256``). Since the manifest lists the sha256 of every file, this
one digest names the whole package: a threshold, the normalization or a file
that changed gives another digest. It is what a node's config pins
(``inspection.model.sha256``) and what a signature signs. Only the packaging
code writes it (``write_manifest``); a manifest edited by hand no longer
matches it and the package is refused. ``rehash_manifest`` adopts a manifest's
present content deliberately (for a package written before manifests were
hashed; ``lineside model rehash``).

``load_package`` verifies all of it and refuses a corrupt, edited or mismatched
package with a ``PackageError`` that lists every problem on one line.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
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
CHECK_DIR = "check"
"""The folder of the check images (``Manifest.check``)."""
SIGNATURE_FILE = "signature.json"
"""Written by ``models.signing.sign_package``; not listed in ``files`` (it signs the digest)."""
DIGEST_KEY = "package_sha256"
"""The manifest key holding the digest of the rest of the manifest."""


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


class DataRecord(_Strict):
    """Which images the package saw and which were held out (``models.data.holdout``):
    sha256 of each image's bytes. ``lineside eval`` leaves out every image in ``seen``."""

    holdout_fraction: float = Field(ge=0, le=0.9)
    holdout_seed: int
    seen_sha256: tuple[str, ...]
    """Every image training could read: trained on or used for validation and calibration."""
    holdout_sha256: tuple[str, ...]


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
    data: DataRecord | None = None
    """None in packages written before holdouts were recorded: nothing can be excluded."""
    training: dict[str, Any]
    graphs: dict[Literal["detect", "explain"], str]
    weights: str
    files: dict[str, str]
    size_calibration: SizeCalibration | None = None
    """How the size fact's length combines the size head and the main region, fitted on
    validation data (``models.sizing``); ``None``: the size head's length as it is."""
    check: tuple[str, ...] = ()
    """The check images (PNG, uint8 gray, ``input.size_px`` square, under ``check/``), hashed
    in ``files`` like the graphs; a GPU runtime's parity gate runs them
    (``models.runtime.parity``). Empty in packages written before they shipped."""

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
    """A verified package: its folder, manifest, network shape and digest
    (``package_sha256``, see the module docstring)."""

    root: Path
    manifest: Manifest
    net: NetConfig
    sha256: str

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


def manifest_sha256(content: dict[str, Any]) -> str:
    """The digest of a manifest's content (every key but ``package_sha256``): sha256 of its
    canonical JSON (see the module docstring). Raises ``ValueError`` for NaN or infinity."""
    content = {k: v for k, v in content.items() if k != DIGEST_KEY}
    text = json.dumps(
        content, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    )
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def write_manifest(root: str | Path, fields: dict[str, Any]) -> Manifest:
    """Hash the package's files, then validate and write the manifest with its digest.

    ``fields`` is every manifest field but ``format``, ``format_version`` and
    ``files`` (those given are replaced, as is a ``package_sha256``). A signature
    of the package's former content is removed: it no longer covers it. Raises
    ``PackageError`` when the fields do not form a valid manifest.
    """
    base = Path(root)
    names = sorted({*fields["graphs"].values(), fields["weights"], *fields.get("check", ())})
    files = {n: sha256_file(base / n) for n in names}
    rest = {k: v for k, v in fields.items() if k not in ("format", "format_version", DIGEST_KEY)}
    data = {"format": FORMAT, "format_version": FORMAT_VERSION, **rest, "files": files}
    try:
        manifest = Manifest.model_validate(data)
    except ValidationError as exc:
        raise PackageError(f"{base}: invalid manifest: {_problems(exc)}") from exc
    _write(base, manifest.model_dump(mode="json"))
    return manifest


def _write(base: Path, content: dict[str, Any]) -> str:
    """Write ``content`` as the manifest with its digest (replacing the file atomically) and
    drop a signature of what was there before; the digest."""
    try:
        digest = manifest_sha256(content)
    except ValueError as exc:
        raise PackageError(f"{base}: invalid manifest: {exc}") from exc
    text = json.dumps({**content, DIGEST_KEY: digest}, indent=2, allow_nan=False) + "\n"
    tmp = base / f".{MANIFEST_FILE}.tmp"
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(base / MANIFEST_FILE)
    (base / SIGNATURE_FILE).unlink(missing_ok=True)
    return digest


def rehash_manifest(root: str | Path) -> str:
    """Adopt the manifest's present content: write its ``package_sha256`` anew; the digest.

    For a package written before manifests were hashed, or edited on purpose: whatever
    the manifest now says becomes the package. Every listed file must still match its
    sha256 and the manifest must be valid. Removes a signature (it signed other content).
    Raises ``PackageError`` listing the problems otherwise.
    """
    base = Path(root)
    raw = _read_raw(base)
    content = {k: v for k, v in raw.items() if k != DIGEST_KEY}
    manifest, problems = _verify_content(base, content)
    if problems or manifest is None:
        raise PackageError(f"{base}: not rehashed: " + "; ".join(problems))
    return _write(base, content)


def _read_raw(base: Path) -> dict[str, Any]:
    mpath = base / MANIFEST_FILE
    if not mpath.is_file():
        raise PackageError(f"{base}: not a model package (no {MANIFEST_FILE})")
    try:
        raw = json.loads(mpath.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PackageError(f"{mpath}: not valid JSON ({exc})") from exc
    if not isinstance(raw, dict):
        raise PackageError(f"{mpath}: not a JSON object")
    if raw.get("format_version") not in (None, FORMAT_VERSION):
        raise PackageError(
            f"{mpath}: format_version {raw.get('format_version')!r}; "
            f"this lineside reads version {FORMAT_VERSION} (retrain the package with "
            "this version's models.train to upgrade it)"
        )
    return raw


def load_package(root: str | Path) -> ModelPackage:
    """Read and verify a package.

    Checks: the manifest parses and has every field with a valid value; the
    format and version are this code's; its ``package_sha256`` matches its
    content (nothing in it was edited); every graph and the weights are listed
    in ``files`` and exist, and every listed file's sha256 matches; the network
    shape agrees with the types and vocabulary. A signature is not checked here
    (``models.signing.verify_signature``). Raises ``PackageError`` listing every
    problem found, on one line.
    """
    base = Path(root)
    raw = _read_raw(base)
    claimed = raw.get(DIGEST_KEY)
    content = {k: v for k, v in raw.items() if k != DIGEST_KEY}
    problems: list[str] = []
    if claimed is None:
        problems.append(
            f"{MANIFEST_FILE}: no {DIGEST_KEY} (written before manifests were hashed, or by "
            "hand): check it, then adopt it with `lineside model rehash PACKAGE`"
        )
    else:
        try:
            actual = manifest_sha256(content)
        except ValueError:
            actual = ""  # NaN or infinity: the validation below names the field
        if actual != claimed:
            problems.append(
                f"{MANIFEST_FILE}: content does not match its {DIGEST_KEY} "
                "(edited after it was packaged)"
            )
    manifest, more = _verify_content(base, content)
    problems += more
    if problems or manifest is None:
        raise PackageError(f"{base}: refused: " + "; ".join(problems))
    net = NetConfig.from_dict(manifest.net)
    return ModelPackage(base, manifest, net, str(claimed))


def _verify_content(base: Path, content: dict[str, Any]) -> tuple[Manifest | None, list[str]]:
    """The manifest in ``content`` and every problem with it and the files it lists."""
    try:
        manifest = Manifest.model_validate(content)
    except ValidationError as exc:
        return None, [f"{MANIFEST_FILE}: invalid manifest: {_problems(exc)}"]
    problems: list[str] = []
    needed = {*manifest.graphs.values(), manifest.weights, *manifest.check}
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
    return manifest, problems


def check_images(package: ModelPackage) -> list[tuple[str, npt.NDArray[np.uint8]]]:
    """The package's check images as ``(name, uint8 (S, S))``, in manifest order; none for a
    package written before they shipped.

    Their bytes were verified by ``load_package``. Raises ``PackageError`` for one that
    does not decode or is not a gray image of the package's input size.
    """
    from PIL import Image, UnidentifiedImageError

    size = package.manifest.input.size_px
    out = []
    for name in package.manifest.check:
        path = package.root / name
        try:
            with Image.open(path) as im:
                mode = im.mode
                pixels = np.asarray(im, dtype=np.uint8).copy() if mode == "L" else None
        except (OSError, UnidentifiedImageError) as exc:
            raise PackageError(f"{path}: check image does not decode: {exc}") from exc
        if pixels is None or pixels.shape != (size, size):
            got = f"mode {mode}" if pixels is None else f"shape {pixels.shape}"
            raise PackageError(
                f"{path}: a check image must be 8-bit gray {size}x{size} (got {got})"
            )
        out.append((name, pixels))
    return out


def write_check_images(
    root: str | Path, images: Sequence[tuple[str, npt.NDArray[np.uint8]]]
) -> list[str]:
    """Write ``images`` (``(label, uint8 (S, S))``) as ``check/NN-label.png`` into the package
    folder ``root``, replacing any there; their names for ``Manifest.check``.

    The manifest is not touched: pass the names as its ``check`` field to
    ``write_manifest``, which hashes them. Raises ``ValueError`` for an image that is not
    2-D uint8, ``OSError`` when they cannot be written.
    """
    from PIL import Image

    folder = Path(root) / CHECK_DIR
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    names = []
    for i, (label, pixels) in enumerate(images):
        if pixels.dtype != np.uint8 or pixels.ndim != 2:
            raise ValueError(f"check image {label!r}: expected uint8 (S, S), got {pixels.shape}")
        safe = re.sub(r"[^A-Za-z0-9]+", "_", label).strip("_") or "image"
        name = f"{CHECK_DIR}/{i:02d}-{safe}.png"
        Image.fromarray(pixels).save(Path(root) / name)
        names.append(name)
    return names


def _problems(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}" for e in exc.errors()
    )
