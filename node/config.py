"""Node configuration: TOML validated once at startup into frozen typed objects.

Geometry is written in millimetres and converted to encoder counts with
``line.counts_per_mm`` (see ``node.line.geometry.LineGeometry``). Every problem in a file is
reported at once, each with its key path, by :func:`load_config`.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from drivers.camera.settings import AravisSettings, HarvestersSettings
from drivers.plc.settings import ModbusSettings, OpcUaSettings, RejectMode
from node.audit.settings import AuditSettings
from node.errors import ConfigError
from node.hmi.settings import HmiSettings
from node.north.settings import NorthSettings
from node.recipe.settings import (
    CauseSettings,
    RepeatsSettings,
    RuleSettings,
    ZoneSettings,
    recipe_problems,
)
from node.selection import overlay
from node.web.settings import WebSettings

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "sim.toml"
"""The embedded default: the simulated line that ``make run`` starts."""

ModelBackendName = Literal["onnxruntime", "cuda", "tensorrt", "torch"]
MODEL_BACKENDS: tuple[ModelBackendName, ...] = ("onnxruntime", "cuda", "tensorrt", "torch")

PositiveFloat = Annotated[float, Field(gt=0)]
NonNegFloat = Annotated[float, Field(ge=0)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NodeSection(_Section):
    """``[node]``: identity and lifecycle."""

    name: str = "lineside"
    state_dir: Path = Path("state")
    drain_grace_s: PositiveFloat = 5.0
    fail_safe_action: Literal["reject"] = "reject"
    status_interval_s: PositiveFloat = 1.0
    watchdog_stall_s: PositiveFloat = 2.0
    pulse_arm_ms: Annotated[float, Field(ge=2, le=500)] = 10.0
    auto_start: bool = True
    """Start inspecting as soon as the resources are open (off: wait for StartContinuous)."""


class LineSection(_Section):
    """``[line]``: conveyor geometry in millimetres, measured from the origin line.

    The origin line is the part-present sensor (``tracking = "sensor"``) or an
    arbitrary reference at which part centres pass every ``part_pitch_mm``
    (``tracking = "pitch"``).
    """

    counts_per_mm: PositiveFloat
    encoder_bits: Literal[16, 32] = 32
    tracking: Literal["pitch", "sensor"] = "pitch"
    part_pitch_mm: PositiveFloat
    part_length_mm: PositiveFloat
    first_part_mm: float = 0.0
    camera_position_mm: PositiveFloat
    reject_position_mm: PositiveFloat
    actuator_lead_mm: NonNegFloat = 0.0
    pulse_width_mm: PositiveFloat = 5.0
    max_speed_mm_s: PositiveFloat = 3000.0
    jitter_mm: NonNegFloat = 0.5
    sample_time_jitter_ms: Annotated[float, Field(ge=0.0, le=50.0)] = 1.0
    speed_window_ms: PositiveFloat = 40.0
    tracking_loss_ms: Annotated[float, Field(ge=5.0, le=5000.0)] = 50.0
    """Every encoder sample refused for this long: tracking is lost (a fault: Error state,
    PLC Ready dropped, heartbeat stopped; parts in flight are fail-safe rejected)."""


class SimCameraSection(_Section):
    """``[camera.sim]``: the simulated camera's sensor and timing."""

    width_px: Annotated[int, Field(ge=32, le=4096)] = 320
    height_px: Annotated[int, Field(ge=32, le=4096)] = 320
    mm_per_px: PositiveFloat = 0.125
    latency_ms: NonNegFloat = 3.0
    drop_rate: Annotated[float, Field(ge=0, le=1)] = 0.0
    incomplete_rate: Annotated[float, Field(ge=0, le=1)] = 0.0


class CameraSection(_Section):
    """``[camera]``: which driver acquires frames, and how long to wait for one.

    ``timeout_ms`` and ``queue_size`` apply to every driver (they replace the
    same keys of ``[camera.aravis]``/``[camera.harvesters]``).
    """

    driver: Literal["sim", "aravis", "harvesters"] = "sim"
    timeout_ms: PositiveFloat = 200.0
    queue_size: Annotated[int, Field(ge=1, le=1024)] = 16
    trigger_tolerance_mm: PositiveFloat = 5.0
    trigger_lead_mm: NonNegFloat = 0.0
    """The trigger is aimed this far before the part reaches the camera position, so the
    delays of a busy machine photograph it nearer the centre; less than
    ``trigger_tolerance_mm``, which still bounds how far off the centre a frame may be."""
    sim: SimCameraSection = SimCameraSection()
    aravis: AravisSettings | None = None
    harvesters: HarvestersSettings | None = None


class SimEncoderSection(_Section):
    """``[encoder.sim]``: how often the simulated PLC counter is read."""

    sample_interval_ms: PositiveFloat = 2.0
    count_offset: Annotated[int, Field(ge=0)] = 0
    latch_edges: bool = True


class EncoderSection(_Section):
    """``[encoder]``: where encoder counts come from (``plc``: the link in ``[plc]``)."""

    driver: Literal["sim", "plc"] = "sim"
    sim: SimEncoderSection = SimEncoderSection()


class RejectSection(_Section):
    """``[reject]``: how the reject actuator is fired (``plc``: the link in ``[plc]``)."""

    driver: Literal["sim", "plc"] = "sim"
    timeout_ms: PositiveFloat = 50.0


class PlcSection(_Section):
    """``[plc]``: the PLC link behind ``encoder.driver``/``reject.driver = "plc"``.

    One driver serves both edges over one link; its settings are the
    ``[plc.<driver>]`` table (see ``drivers/plc/settings.py`` and docs/plc.md).
    """

    driver: Literal["modbus", "opcua"] = "modbus"
    modbus: ModbusSettings | None = None
    opcua: OpcUaSettings | None = None
    publish_verdicts: bool = True
    """Write each part's verdict, defect code and the result counter to the PLC."""

    @property
    def settings(self) -> ModbusSettings | OpcUaSettings:
        """The chosen driver's settings."""
        chosen = self.modbus if self.driver == "modbus" else self.opcua
        assert chosen is not None  # the cross-field rules guarantee it
        return chosen

    @property
    def reject_mode(self) -> RejectMode:
        """``node_timed`` or ``plc_tracked``, from the driver's settings."""
        return self.settings.reject_mode


class ClassicalSection(_Section):
    """``[inspection.classical]``: the golden-template detector."""

    template: Path = Path("state/template.npz")
    shift_px: Annotated[int, Field(ge=0, le=8)] = 2
    teach_parts: Annotated[int, Field(ge=8, le=5000)] = 120


class RecipeSection(_Section):
    """``[inspection.recipe]``: what turns findings into a verdict.

    The model's score rule (``reject_score``, ``min_region_area_mm2``,
    ``reject_types``) judges what no zone rule covers; ``zones``, ``rules`` and
    ``causes`` say it in the plant's words (``node.recipe.settings``);
    ``zone_image`` is a painted zone image whose colours the zones name;
    ``repeats`` when a defect coming back at one place is announced.
    """

    name: str = "default"
    pixel_threshold: PositiveFloat = 6.0
    min_region_area_mm2: NonNegFloat = 0.3
    reject_score: PositiveFloat = 6.0
    reject_types: tuple[str, ...] = ()
    zone_image: Path | None = None
    zones: tuple[ZoneSettings, ...] = ()
    rules: tuple[RuleSettings, ...] = ()
    causes: tuple[CauseSettings, ...] = ()
    repeats: RepeatsSettings = RepeatsSettings()


class ModelSection(_Section):
    """``[inspection.model]``: the defect model package run by a model backend.

    ``package`` is a folder made by ``lineside train`` (``models/demo`` ships
    with the repo); ``threads`` is the CPU thread count (onnxruntime, torch);
    ``explain`` runs the explanation decoder in the cycle (off: the explanation
    is rendered from the structured facts); ``max_batch`` bounds TensorRT's
    engines; ``engine_cache`` holds TensorRT plans (relative: under the state
    directory).

    Which package may judge (see README "Model package integrity"): ``sha256``
    pins the package's digest (its manifest's ``package_sha256``, printed by
    ``lineside model verify``); ``trusted_keys`` are ed25519 public key files
    (``lineside model keygen``) whose signatures are accepted, and a package
    signed by another key is refused; ``require_signature`` refuses an unsigned
    package too.
    """

    package: Path = Path("models/demo")
    threads: Annotated[int, Field(ge=1, le=64)] = 1
    explain: bool = True
    max_batch: Annotated[int, Field(ge=1, le=64)] = 8
    engine_cache: Path = Path("trt-engines")
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None = None
    trusted_keys: tuple[Path, ...] = ()
    require_signature: bool = False


class ShadowSection(_Section):
    """``[inspection.shadow]``: a candidate package judging beside the active one (shadow
    mode, see README "Shadow mode and promotion"). Its verdicts are recorded under
    ``<node.state_dir>/shadow/`` and never act.

    ``package`` is the candidate (none: no shadow); it is verified by the same rules as
    ``[inspection.model]`` (its keys and ``require_signature``), and ``sha256`` pins its
    digest. ``queue`` parts may wait for it (more are skipped, counted);
    ``keep_images`` disagreement crops are kept for review.
    """

    package: Path | None = None
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None = None
    queue: Annotated[int, Field(ge=1, le=256)] = 4
    keep_images: Annotated[int, Field(ge=0, le=100_000)] = 200


class InspectionSection(_Section):
    """``[inspection]``: region of interest, backend and recipe.

    ``backend``: ``classical`` (the golden template, no training framework) or a
    model runtime (``onnxruntime`` on the CPU, ``cuda`` or ``tensorrt`` on a GPU,
    ``torch`` as the reference) running ``[inspection.model]``. A GPU runtime
    runs fp16 or fp32 only where the parity gate passes, else ONNX Runtime
    (docs/gpu.md).
    """

    backend: Literal["classical", "onnxruntime", "cuda", "tensorrt", "torch"] = "classical"
    mm_per_px: PositiveFloat = 0.125
    roi_size_px: Annotated[int, Field(ge=32, le=2048)] = 256
    belt_threshold: Annotated[int, Field(ge=0, le=255)] = 60
    batch_size: Annotated[int, Field(ge=1, le=64)] = 4
    classical: ClassicalSection = ClassicalSection()
    model: ModelSection = ModelSection()
    shadow: ShadowSection = ShadowSection()
    recipe: RecipeSection = RecipeSection()


class SimRepeatSection(_Section):
    """``[sim.repeat]``: a repeating defect injected on the sim line: parts ``from_part`` to
    ``from_part + parts - 1`` each carry the ``defect`` drawn from ``seed``, at the same
    place on the part (a worn tool); placement jitter still moves the part in the frame."""

    defect: Literal["scratch", "crack", "spot", "contamination", "missing_feature"] = "scratch"
    from_part: Annotated[int, Field(ge=0)] = 100
    parts: Annotated[int, Field(ge=1)] = 40
    seed: int = 5


class SimLineSection(_Section):
    """``[sim]``: the simulated line behind the sim drivers (ignored otherwise)."""

    speed_mm_s: PositiveFloat = 600.0
    speed_profile: tuple[tuple[NonNegFloat, NonNegFloat], ...] = ()
    accel_mm_s2: NonNegFloat = 5000.0
    """How fast the drive changes speed at each later step of ``speed_profile`` (0: at
    once). 5000 mm/s² (about 0.5 g) stops a 1.2 m/s belt in 240 ms, as a conveyor's drive
    ramps; an instant stop is no belt's, and no tracker can see it coming."""
    family: str = "moulded_plastic"
    defect_rate: Annotated[float, Field(ge=0, le=1)] = 0.1
    placement_jitter_mm: NonNegFloat = 0.0
    seed: int = 1
    repeat: SimRepeatSection | None = None
    multi_defect_rate: Annotated[float, Field(ge=0, le=1)] = 0.0
    """Of the defective parts (not a missing feature), the share that carries two defects of
    their kind."""


class Config(_Section):
    """The whole node configuration."""

    node: NodeSection = NodeSection()
    line: LineSection
    camera: CameraSection = CameraSection()
    encoder: EncoderSection = EncoderSection()
    reject: RejectSection = RejectSection()
    plc: PlcSection | None = None
    inspection: InspectionSection = InspectionSection()
    audit: AuditSettings = AuditSettings()
    hmi: HmiSettings = HmiSettings(enabled=False)
    web: WebSettings = WebSettings()
    north: NorthSettings = NorthSettings()
    sim: SimLineSection = SimLineSection()

    @model_validator(mode="after")
    def _cross(self) -> Config:
        problems = cross_field_problems(self.model_dump(mode="python"))
        if problems:
            raise ValueError("; ".join(f"{key}: {msg}" for key, msg in problems))
        return self

    @property
    def audit_directory(self) -> Path:
        """The audit store folder: ``audit.directory``, relative to ``node.state_dir``."""
        directory = self.audit.directory
        return directory if directory.is_absolute() else self.node.state_dir / directory


def _get(data: dict[str, Any], path: str, default: Any) -> Any:
    node: Any = data
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def _num(data: dict[str, Any], path: str, model: type[BaseModel], field: str) -> float | None:
    """A number from the raw mapping (the field's default when absent); None when the
    value is not a number (its own error is reported already)."""
    value = _get(data, path, model.model_fields[field].default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def cross_field_problems(data: dict[str, Any]) -> list[tuple[str, str]]:
    """Every rule between keys, checked on the raw mapping: ``[(key path, problem)]``.

    Run on the raw TOML as well as on valid values, so a cross-field problem is reported
    under its own key even when the same section has other errors.
    """
    problems: list[tuple[str, str]] = []
    camera = _num(data, "line.camera_position_mm", LineSection, "camera_position_mm")
    reject = _num(data, "line.reject_position_mm", LineSection, "reject_position_mm")
    lead = _num(data, "line.actuator_lead_mm", LineSection, "actuator_lead_mm")
    if camera is not None and reject is not None:
        if reject <= camera:
            problems.append(
                (
                    "line.reject_position_mm",
                    f"must be downstream of line.camera_position_mm ({camera:g} mm)",
                )
            )
        elif lead is not None and lead >= reject - camera:
            problems.append(
                (
                    "line.actuator_lead_mm",
                    "leaves no time between camera and reject station "
                    f"({reject - camera:g} mm apart)",
                )
            )
    length = _num(data, "line.part_length_mm", LineSection, "part_length_mm")
    pitch = _num(data, "line.part_pitch_mm", LineSection, "part_pitch_mm")
    if length is not None and pitch is not None and length > pitch:
        problems.append(
            ("line.part_length_mm", f"longer than line.part_pitch_mm ({pitch:g}): parts overlap")
        )
    tolerance = _num(data, "camera.trigger_tolerance_mm", CameraSection, "trigger_tolerance_mm")
    trigger_lead = _num(data, "camera.trigger_lead_mm", CameraSection, "trigger_lead_mm")
    if tolerance is not None and trigger_lead is not None and trigger_lead >= tolerance:
        problems.append(
            (
                "camera.trigger_lead_mm",
                f"must be less than camera.trigger_tolerance_mm ({tolerance:g} mm): a trigger "
                "sent on time would already be refused as off the camera",
            )
        )
    cam_driver = _get(data, "camera.driver", "sim")
    if cam_driver in ("aravis", "harvesters") and _get(data, f"camera.{cam_driver}", None) is None:
        problems.append((f"camera.{cam_driver}", f"needed by camera.driver = {cam_driver!r}"))
    plc = _get(data, "plc", None)
    uses_plc = "plc" in (_get(data, "encoder.driver", "sim"), _get(data, "reject.driver", "sim"))
    if plc is None and uses_plc:
        problems.append(("plc", "needed when encoder.driver or reject.driver is 'plc'"))
    if isinstance(plc, dict):
        plc_driver = plc.get("driver", "modbus")
        if plc_driver in ("modbus", "opcua") and plc.get(plc_driver) is None:
            problems.append((f"plc.{plc_driver}", f"needed by plc.driver = {plc_driver!r}"))
    needs_key = _get(data, "inspection.model.require_signature", False) is True
    if needs_key and not _get(data, "inspection.model.trusted_keys", ()):
        problems.append(
            (
                "inspection.model.trusted_keys",
                "empty, but inspection.model.require_signature = true: name the public key "
                "files whose signatures are trusted",
            )
        )
    has_shadow = _get(data, "inspection.shadow.package", None) is not None
    if has_shadow and _get(data, "inspection.backend", "classical") == "classical":
        problems.append(
            (
                "inspection.shadow.package",
                "a shadow candidate needs a model backend: set inspection.backend "
                "(onnxruntime, tensorrt or torch)",
            )
        )
    if _get(data, "hmi.enabled", False) is True and _get(data, "audit.enabled", True) is False:
        problems.append(("hmi.enabled", "the HMI serves results from the audit store: enable it"))
    if _get(data, "north.enabled", False) is True and _get(data, "audit.enabled", True) is False:
        problems.append(
            (
                "north.enabled",
                "the Sparkplug B publisher forwards the audit store's records: enable it",
            )
        )
    roi = _num(data, "inspection.roi_size_px", InspectionSection, "roi_size_px")
    width = _num(data, "camera.sim.width_px", SimCameraSection, "width_px")
    height = _num(data, "camera.sim.height_px", SimCameraSection, "height_px")
    frame = None if width is None or height is None else min(width, height)
    if cam_driver == "sim" and roi is not None and frame is not None and roi > frame:
        problems.append(
            ("inspection.roi_size_px", f"larger than the sim camera frame ({width:g}x{height:g})")
        )
    max_speed = _num(data, "line.max_speed_mm_s", LineSection, "max_speed_mm_s")
    if _get(data, "encoder.driver", "sim") == "sim" and max_speed is not None:
        speed = _num(data, "sim.speed_mm_s", SimLineSection, "speed_mm_s")
        if speed is not None and speed > max_speed:
            problems.append(
                (
                    "sim.speed_mm_s",
                    f"{speed:g} is over line.max_speed_mm_s = {max_speed:g}: "
                    "the node would refuse every encoder sample",
                )
            )
        profile = _get(data, "sim.speed_profile", ())
        if isinstance(profile, list | tuple):
            fast = [
                step[1]
                for step in profile
                if isinstance(step, list | tuple)
                and len(step) == 2
                and isinstance(step[1], int | float)
                and step[1] > max_speed
            ]
            if fast:
                problems.append(
                    (
                        "sim.speed_profile",
                        f"a step at {max(fast):g} mm/s is over line.max_speed_mm_s = {max_speed:g}",
                    )
                )
    recipe = _get(data, "inspection.recipe", {})
    if isinstance(recipe, dict):
        problems += [(f"inspection.recipe.{k}", m) for k, m in recipe_problems(recipe)]
    return problems


def _key_path(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(p) for p in loc) or "(top level)"


def parse_config(data: dict[str, Any], source: str = "<config>") -> Config:
    """Validate a parsed TOML mapping.

    Raises ``ConfigError`` listing every problem as ``source: key.path: message``.
    """
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            if not err["loc"]:  # the cross-field rules: reported below, each by its key
                continue
            msg = err["msg"].removeprefix("Value error, ")
            problems.append(f"{source}: {_key_path(err['loc'])}: {msg}")
        problems += [f"{source}: {key}: {msg}" for key, msg in cross_field_problems(data)]
        raise ConfigError(problems) from exc


def load_config(path: Path) -> Config:
    """Read and validate a TOML config file, with the model selection the node keeps in its
    state directory where it cannot rewrite the file laid over it (``node.selection``).

    Raises ``ConfigError`` for an unreadable file, bad TOML, or invalid values.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: not valid TOML: {exc}"]) from exc
    try:
        data = overlay(data, str(path))
    except ValueError as exc:
        raise ConfigError([str(exc)]) from exc
    return parse_config(data, str(path))
