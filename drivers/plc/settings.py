"""Settings of the PLC drivers, embedded in the node's config.

``node/config.py`` mounts :class:`ModbusSettings` as ``[plc.modbus]`` and
:class:`OpcUaSettings` as ``[plc.opcua]``. Times are milliseconds or seconds as
the field name says. Secrets never live in the TOML: passwords are read from
the environment variable the config names.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from drivers.plc.iomap import ModbusIoMap, OpcUaIoMap

RejectMode = Literal["node_timed", "plc_tracked"]
"""``node_timed``: the node pulses the output at the scheduled count (compensating
actuator lead and transport delay). ``plc_tracked``: the node hands verdict and
origin count to the PLC (ResultValid/Ack) and the PLC's shift register fires."""

Ms = Annotated[float, Field(gt=0, le=600_000)]
Port = Annotated[int, Field(ge=1, le=65535)]


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BackoffSettings(_Settings):
    """Reconnect backoff: wait ``initial_s``, times ``factor`` per failure, at most ``max_s``."""

    initial_s: Annotated[float, Field(gt=0, le=60)] = 0.2
    max_s: Annotated[float, Field(gt=0, le=600)] = 5.0
    factor: Annotated[float, Field(ge=1, le=10)] = 2.0

    @model_validator(mode="after")
    def _order(self) -> BackoffSettings:
        if self.max_s < self.initial_s:
            raise ValueError("max_s must be >= initial_s")
        return self

    def delay_s(self, failures: int) -> float:
        """Wait before the next attempt after ``failures`` consecutive failed ones (>= 1)."""
        return float(min(self.max_s, self.initial_s * self.factor ** max(0, failures - 1)))


class _Common(_Settings):
    reject_mode: RejectMode = "node_timed"
    request_timeout_ms: Ms = 50.0
    """Timeout of one read or write on the main connection."""
    connect_timeout_ms: Ms = 1000.0
    fire_timeout_ms: Ms = 20.0
    """Timeout of the node-timed pulse write on its own connection (blocks the pulse thread)."""
    handshake_timeout_ms: Ms = 100.0
    """PLC-tracked: ResultValid set → Ack seen, and ResultValid cleared → Ack cleared."""
    output_delay_ms: Annotated[float, Field(ge=0, le=1000)] = 0.0
    """Extra delay from the PLC receiving the fire write to its output switching (its scan
    time, on average half of it); added to the measured transport delay in ``fire_lead_ns``."""
    verify_writes: bool = False
    """Read outputs back after writing them (not the pulse: it must not wait) and raise
    ``PlcReadbackMismatch`` when the PLC holds other values."""
    backoff: BackoffSettings = BackoffSettings()


class ModbusSettings(_Common):
    """``[plc.modbus]``: a PLC's Modbus TCP server.

    The driver opens two TCP connections: the main one (polling, heartbeat,
    results; one request at a time under one lock) and a pulse connection used
    only by the node-timed ``fire`` from the pulse thread. A PLC must allow two
    client connections (most allow 4–16).
    """

    host: str = "127.0.0.1"
    port: Port = 502
    device_id: Annotated[int, Field(ge=0, le=255)] = 1
    """Unit/device id; 1 for most PLCs, 255 or 0 for some gateways."""
    poll_interval_ms: Annotated[float, Field(ge=0.5, le=1000)] = 2.0
    """How often the inputs are read (one batched request per table and device)."""
    max_read_gap: Annotated[int, Field(ge=0, le=64)] = 8
    """Input registers this close together are read in one request (the gap is read too)."""
    timeouts_before_reconnect: Annotated[int, Field(ge=1, le=100)] = 3
    """Consecutive request timeouts after which the connection is dropped and reopened."""
    io: ModbusIoMap = ModbusIoMap()


SecurityPolicy = Literal["None", "Basic256Sha256", "Aes128Sha256RsaOaep", "Aes256Sha256RsaPss"]


class OpcUaSettings(_Common):
    """``[plc.opcua]``: the PLC's OPC UA server; the node is a client.

    Inputs arrive by subscription; outputs are written, one Write request per
    group. ``security_policy`` other than ``"None"`` needs ``certificate`` and
    ``private_key`` (PEM or DER); the server certificate is fetched from the
    endpoint unless ``server_certificate`` pins it. ``user`` logs in with the
    password from environment variable ``password_env``.
    """

    url: str = "opc.tcp://127.0.0.1:4840"
    security_policy: SecurityPolicy = "None"
    security_mode: Literal["Sign", "SignAndEncrypt"] = "SignAndEncrypt"
    certificate: Path | None = None
    private_key: Path | None = None
    private_key_password_env: str | None = None
    server_certificate: Path | None = None
    application_uri: str = "urn:lineside:node"
    """Must match the URI in ``certificate``'s subjectAltName."""
    user: str | None = None
    password_env: str | None = None
    request_timeout_ms: Ms = 200.0
    connect_timeout_ms: Ms = 3000.0
    fire_timeout_ms: Ms = 50.0
    handshake_timeout_ms: Ms = 200.0
    sampling_interval_ms: Annotated[float, Field(ge=0, le=10_000)] = 1.0
    """Requested sampling interval of every input (0: the server's fastest)."""
    publishing_interval_ms: Annotated[float, Field(ge=0, le=10_000)] = 0.0
    """Requested publishing interval (0: publish as soon as a value changes, where allowed)."""
    queue_size: Annotated[int, Field(ge=1, le=10_000)] = 100
    """Server-side queue per monitored item, so no encoder value is lost between publishes."""
    timestamps: Literal["source", "arrival"] = "source"
    """``source``: date a sample by the PLC's SourceTimestamp, mapped to the node's clock
    (offset = the smallest arrival − source difference seen lately); ``arrival``: when
    the notification arrived (late by up to one publishing interval)."""
    io: OpcUaIoMap = OpcUaIoMap()

    @model_validator(mode="after")
    def _security(self) -> OpcUaSettings:
        problems = []
        if self.security_policy != "None":
            if self.certificate is None:
                problems.append("certificate: required when security_policy is not None")
            if self.private_key is None:
                problems.append("private_key: required when security_policy is not None")
        if self.user is not None and self.password_env is None:
            problems.append("password_env: required with user (name of the variable)")
        if not self.url.startswith("opc.tcp://"):
            problems.append("url: must start with opc.tcp://")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def password(self) -> str | None:
        """The user's password from the environment.

        Raises:
            KeyError: the variable named by ``password_env`` is not set.
        """
        if self.password_env is None:
            return None
        return os.environ[self.password_env]

    def private_key_password(self) -> str | None:
        """The private key's password from the environment, or None.

        Raises:
            KeyError: the variable named by ``private_key_password_env`` is not set.
        """
        if self.private_key_password_env is None:
            return None
        return os.environ[self.private_key_password_env]
