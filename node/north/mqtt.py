"""Logging in to the broker: the one place an MQTT client of ours gets its user and TLS."""

from __future__ import annotations

from pathlib import Path

import paho.mqtt.client as mqtt


def secure_client(
    client: mqtt.Client,
    *,
    username: str | None,
    password: str | None,
    tls: bool,
    ca_file: Path | None = None,
    cert_file: Path | None = None,
    key_file: Path | None = None,
) -> None:
    """Give ``client`` the broker login (when ``username``) and TLS (when ``tls``: the
    broker's certificate checked against ``ca_file``, or the system's CAs; a client
    certificate when ``cert_file``/``key_file``)."""
    if username is not None:
        client.username_pw_set(username, password)
    if tls:
        client.tls_set(
            ca_certs=str(ca_file) if ca_file else None,
            certfile=str(cert_file) if cert_file else None,
            keyfile=str(key_file) if key_file else None,
        )
