"""Applying GenICam features from config, the same way for every driver.

A driver wraps its vendor node map (harvesters' ``genicam.genapi.NodeMap``,
Aravis' ``ArvDevice``) in a small :class:`NodeMapAccess` adapter;
:func:`apply_features` then checks every requested feature before writing
it — the node exists, is writable now, the value has the right type and lies
in range (integer increment included) or names an available enum entry — and
reports every problem at once, each line naming its feature.

Features are applied in the order given (TOML tables keep their order), so a
config can shrink ``Width`` before it moves ``OffsetX``, or set a selector
before the feature it selects.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import structlog

from drivers.errors import FeatureError

log = structlog.get_logger(__name__)

FeatureValue = bool | int | float | str
"""What a config may assign to a feature (TOML's scalar types)."""


class FeatureKind(enum.Enum):
    """The GenICam interface type of a node, as far as applying values is concerned."""

    INTEGER = "integer"
    FLOAT = "float"
    ENUMERATION = "enumeration"
    BOOLEAN = "boolean"
    STRING = "string"
    COMMAND = "command"
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class FeatureInfo:
    """What the device says about one feature right now.

    ``minimum``/``maximum``/``increment`` are set for integers and floats
    (``increment`` for integers only); ``entries`` lists the enum entries that
    are available now.
    """

    name: str
    kind: FeatureKind
    readable: bool
    writable: bool
    minimum: float | None = None
    maximum: float | None = None
    increment: int | None = None
    entries: tuple[str, ...] = ()


class NodeMapAccess(Protocol):
    """A vendor node map seen through the few calls applying features needs."""

    def describe(self, name: str) -> FeatureInfo | None:
        """The feature's type, access and limits; None when the device has no such feature."""
        ...

    def write(self, info: FeatureInfo, value: FeatureValue) -> None:
        """Write ``value`` (already checked against ``info``); may raise vendor errors."""
        ...


def check_value(info: FeatureInfo, value: FeatureValue) -> str | None:
    """Why ``value`` cannot be written to the feature ``info`` describes; None if it can."""
    name = info.name
    if info.kind is FeatureKind.COMMAND:
        return f"{name}: is a command, not a value that can be set"
    if info.kind is FeatureKind.OTHER:
        return f"{name}: is not a value feature (category, register or port)"
    if not info.writable:
        return f"{name}: is not writable on this device now (read-only, or locked while acquiring)"
    if info.kind is FeatureKind.INTEGER:
        if isinstance(value, bool) or not isinstance(value, int):
            return f"{name}: expects an integer, got {value!r}"
        return _check_range(info, value)
    if info.kind is FeatureKind.FLOAT:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"{name}: expects a number, got {value!r}"
        return _check_range(info, value)
    if info.kind is FeatureKind.BOOLEAN:
        return None if isinstance(value, bool) else f"{name}: expects true or false, got {value!r}"
    if not isinstance(value, str):
        return f"{name}: expects a string, got {value!r}"
    if info.kind is FeatureKind.ENUMERATION and value not in info.entries:
        choices = ", ".join(info.entries) or "(none available now)"
        return f"{name}: {value!r} is not an available entry; choose one of {choices}"
    return None


def _check_range(info: FeatureInfo, value: int | float) -> str | None:
    lo, hi = info.minimum, info.maximum
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        return f"{info.name}: {value!r} is out of range [{_num(lo)}, {_num(hi)}]"
    inc = info.increment
    if inc and inc > 1 and lo is not None and (int(value) - int(lo)) % inc:
        return f"{info.name}: {value!r} is not min {_num(lo)} plus a multiple of increment {inc}"
    return None


def _num(v: float | None) -> str:
    if v is None:
        return "?"
    return str(int(v)) if float(v).is_integer() else f"{v:g}"


def apply_features(
    access: NodeMapAccess,
    features: Mapping[str, FeatureValue],
    device: str,
    vendor_errors: tuple[type[BaseException], ...] = (),
) -> None:
    """Check and write ``features`` in order; all problems are reported together.

    ``device`` names the camera in messages; ``vendor_errors`` are the
    exception types a write may raise that become problem lines (anything
    else propagates). A feature that fails does not stop the ones after it,
    so one run shows every problem.
    Raises ``FeatureError`` listing one line per failed feature.
    """
    problems: list[str] = []
    for name, value in features.items():
        try:
            info = access.describe(name)
        except vendor_errors as exc:
            problems.append(f"{name}: cannot be read from the device: {exc}")
            continue
        if info is None:
            problems.append(f"{name}: the device has no such feature")
            continue
        problem = check_value(info, value)
        if problem is None:
            try:
                access.write(info, value)
            except vendor_errors as exc:
                problem = f"{name}: the device refused {value!r}: {exc}"
        if problem is not None:
            problems.append(problem)
            continue
        log.debug("camera_feature_set", device=device, feature=name, value=value)
    if problems:
        raise FeatureError(device, problems)
    if features:
        log.info("camera_features_applied", device=device, features=dict(features))
