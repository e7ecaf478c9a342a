"""``lineside web CONFIG``: serve the web view beside the node (uvicorn)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import structlog
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from node.config import load_config
from node.errors import ConfigError, StartupError
from node.hmi.settings import HmiSettings
from node.service.priority import set_nice
from node.web.settings import WebSettings

log = structlog.get_logger(__name__)


def add_parsers(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``web`` to the ``lineside`` command line."""
    web = subparsers.add_parser(
        "web", help="serve the line at a glance in a browser (a process beside the node)"
    )
    web.add_argument("config", type=Path, help="the node's config file")
    web.add_argument("--host", help="listen address (default: web.host)")
    web.add_argument("--port", type=int, help="TCP port (default: web.port)")
    web.set_defaults(func=run_cli)


def _https_files(state_dir: Path, web: WebSettings, hmi: HmiSettings) -> tuple[str, str]:
    """The node's certificate as PEM for uvicorn, and its key. Raises ``StartupError``."""
    from node.web.auth import node_pki, web_pki

    node = node_pki(state_dir, hmi)
    if not (node.cert.is_file() and node.key.is_file()):
        raise StartupError(
            f"web.https: the node's certificate {node.cert} is not there yet "
            "(start the node with [hmi] enabled first)"
        )
    pem = web_pki(state_dir, web).root / "https-cert.pem"
    pem.parent.mkdir(parents=True, exist_ok=True)
    cert = x509.load_der_x509_certificate(node.cert.read_bytes())
    pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return str(pem), str(node.key)


def _lower_priority(nice: int) -> None:
    """Run ``nice`` below normal, the session too where it leads one (see
    ``node.service.priority``): started from a terminal only its own nice applies, and the
    systemd unit's CPUWeight is what keeps it below the node in production."""
    grouped = set_nice(os.getpriority(os.PRIO_PROCESS, 0) + nice)
    log.info("web_priority", nice=nice, session_share_lowered=grouped)


def run_cli(args: argparse.Namespace) -> int:
    """Serve until SIGTERM/SIGINT; returns the exit code."""
    cfg = load_config(args.config)
    if cfg.web.nice:  # before the heavy imports: starting up must not take the node's CPU
        _lower_priority(cfg.web.nice)
    import uvicorn

    from node.web.app import WebApp

    if not cfg.hmi.enabled:
        raise ConfigError(["hmi.enabled: the web view follows the node's HMI server: enable it"])
    if not cfg.audit.enabled:
        raise ConfigError(["audit.enabled: the web view reads the audit store: enable it"])
    host = args.host or cfg.web.host
    port = cfg.web.port if args.port is None else args.port
    if not 0 <= port <= 65535:
        raise ConfigError([f"--port: {port} is not a TCP port"])
    ssl: dict[str, str] = {}
    if cfg.web.https:
        certfile, keyfile = _https_files(cfg.node.state_dir, cfg.web, cfg.hmi)
        ssl = {"ssl_certfile": certfile, "ssl_keyfile": keyfile}
    app = WebApp(cfg).asgi()
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=2,
        lifespan="on",
        **ssl,  # type: ignore[arg-type]
    )
    server = uvicorn.Server(config)
    scheme = "https" if ssl else "http"
    log.info("web_listening", url=f"{scheme}://{host}:{port}/", node=cfg.node.name)
    server.run()
    return 0 if server.started else 3
