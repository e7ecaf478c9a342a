"""The systemd unit, its environment file and install.sh, checked as systemd and bash see them."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from node.__main__ import EXIT_CODES
from node.config import NodeSection
from node.errors import ConfigError

SYSTEMD_DIR = Path(__file__).resolve().parents[3] / "systemd"
UNIT = SYSTEMD_DIR / "lineside.service"
WEB_UNIT = SYSTEMD_DIR / "lineside-web.service"
ENV_FILE = SYSTEMD_DIR / "lineside.env"
INSTALL = SYSTEMD_DIR / "install.sh"

Unit = dict[str, dict[str, list[str]]]


def parse_unit(text: str) -> Unit:
    """Sections -> key -> every value in file order (systemd keys may repeat)."""
    sections: Unit = {}
    current: dict[str, list[str]] | None = None
    carried = ""
    for raw in text.splitlines():
        line = carried + raw.strip()
        carried = ""
        if not line or line[0] in "#;":
            continue
        if line.endswith("\\"):
            carried = line[:-1] + " "
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"assignment outside a section: {line!r}"
        key, sep, value = line.partition("=")
        assert sep, f"not KEY=value: {line!r}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


@pytest.fixture(scope="module")
def unit() -> Unit:
    """The shipped unit, parsed."""
    return parse_unit(UNIT.read_text())


def _one(unit: Unit, section: str, key: str) -> str:
    values = unit[section].get(key)
    assert values is not None, f"[{section}] {key}= is missing"
    assert len(values) == 1, f"[{section}] {key}= is set {len(values)} times"
    return values[0]


def _seconds(value: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(s|sec|min)?", value)
    assert m, f"unsupported time span {value!r}"
    return float(m[1]) * (60 if m[2] == "min" else 1)


# -- unit contents ----------------------------------------------------------------------


def test_notify_service_with_watchdog(unit: Unit) -> None:
    """The node is a Type=notify service, main process only, with a 10 s watchdog."""
    assert _one(unit, "Service", "Type") == "notify"
    assert _one(unit, "Service", "NotifyAccess") == "main"
    assert _seconds(_one(unit, "Service", "WatchdogSec")) == 10


def test_restart_policy_and_timeouts(unit: Unit) -> None:
    """It restarts on failure after a pause, and the stop timeout leaves room for the drain."""
    assert _one(unit, "Service", "Restart") == "on-failure"
    assert _seconds(_one(unit, "Service", "RestartSec")) > 0
    drain_grace_s = NodeSection().drain_grace_s
    assert _seconds(_one(unit, "Service", "TimeoutStopSec")) >= drain_grace_s + 5


def test_config_errors_are_not_restarted(unit: Unit) -> None:
    """The exit status of a ConfigError stops the restart loop (restarting cannot fix it)."""
    assert _one(unit, "Service", "RestartPreventExitStatus") == str(EXIT_CODES[ConfigError])


def test_execstart_and_environment(unit: Unit) -> None:
    """ExecStart runs the venv's lineside on $LINESIDE_CONFIG, from the /etc/lineside env file."""
    assert (
        _one(unit, "Service", "ExecStart")
        == "/opt/lineside/.venv/bin/lineside run ${LINESIDE_CONFIG}"
    )
    assert _one(unit, "Service", "EnvironmentFile").lstrip("-") == "/etc/lineside/lineside.env"
    assert "LINESIDE_CONFIG=/etc/lineside/lineside.toml" in unit["Service"]["Environment"]


def test_runs_as_dedicated_user_with_state_directory(unit: Unit) -> None:
    """A dedicated lineside user, the audit store in StateDirectory, config read-only in /etc."""
    assert _one(unit, "Service", "User") == "lineside"
    assert _one(unit, "Service", "Group") == "lineside"
    assert _one(unit, "Service", "StateDirectory") == "lineside"
    assert _one(unit, "Service", "ConfigurationDirectory") == "lineside"
    assert _one(unit, "Service", "ReadWritePaths").lstrip("-") == "/var/lib/lineside"
    assert _one(unit, "Install", "WantedBy") == "multi-user.target"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectKernelLogs", "yes"),
        ("ProtectControlGroups", "yes"),
        ("RestrictNamespaces", "yes"),
        ("LockPersonality", "yes"),
        ("SystemCallArchitectures", "native"),
        ("CapabilityBoundingSet", ""),
    ],
)
def test_hardening_key(unit: Unit, key: str, value: str) -> None:
    """Each hardening setting is present with its expected value."""
    assert _one(unit, "Service", key) == value


def test_address_families_are_restricted(unit: Unit) -> None:
    """Only unix, IPv4/IPv6 and netlink sockets may be created."""
    families = set(_one(unit, "Service", "RestrictAddressFamilies").split())
    assert families == {"AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK"}


def test_memory_deny_write_execute_is_a_documented_omission(unit: Unit) -> None:
    """MemoryDenyWriteExecute stays off (CUDA/JIT runtimes need W+X) and the unit says why."""
    assert "MemoryDenyWriteExecute" not in unit["Service"]
    assert re.search(
        r"^# MemoryDenyWriteExecute=yes is deliberately NOT set", UNIT.read_text(), re.M
    )


def test_web_unit_follows_the_node_and_yields_to_it() -> None:
    """lineside-web.service is ordered after the node but never starts or stops it, runs the
    ``web`` command, and takes the smallest CPU share and idle I/O."""
    web = parse_unit(WEB_UNIT.read_text())
    assert "lineside.service" in _one(web, "Unit", "After").split()
    for key in ("Wants", "Requires", "BindsTo", "PartOf", "Requisite"):
        assert "lineside.service" not in " ".join(web["Unit"].get(key, []))
    assert " web " in _one(web, "Service", "ExecStart")
    assert int(_one(web, "Service", "CPUWeight")) <= 20
    assert _one(web, "Service", "IOSchedulingClass") == "idle"
    assert _one(web, "Service", "User") == "lineside"


def test_env_file_is_plain_assignments() -> None:
    """The environment file holds only KEY=value lines and sets the config path the unit uses."""
    lines = [
        ln for ln in ENV_FILE.read_text().splitlines() if ln.strip() and not ln.startswith("#")
    ]
    assert all(re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", ln) for ln in lines), lines
    assert "LINESIDE_CONFIG=/etc/lineside/lineside.toml" in lines


# -- systemd-analyze ----------------------------------------------------------------------

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_systemd_analyze = pytest.mark.skipif(
    SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed on this machine"
)


def _verifiable_copy(directory: Path, extra: str = "", unit: Path = UNIT) -> Path:
    """The unit with ExecStart's binary swapped for one that exists here (verify checks it)."""
    text = unit.read_text().replace(
        "ExecStart=/opt/lineside/.venv/bin/lineside ", f"ExecStart={sys.executable} "
    )
    assert sys.executable in text
    text = re.sub(r"^\[Service\]\n", lambda m: m[0] + extra, text, count=1, flags=re.M)
    copy = directory / unit.name
    copy.write_text(text)
    return copy


def _verify_problems(copy: Path) -> tuple[int, list[str]]:
    """Run ``systemd-analyze verify`` and return its status and the lines about our unit."""
    assert SYSTEMD_ANALYZE is not None
    proc = subprocess.run(
        # --recursive-errors=no: the exit status reflects only our unit. --man=no: do not
        # look up Documentation= man pages (absent in minimal images).
        [SYSTEMD_ANALYZE, "verify", "--man=no", "--recursive-errors=no", str(copy)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "SYSTEMD_LOG_COLOR": "0"},
    )
    # verify also loads the units ours depends on (network-online.target, multi-user.target
    # and whatever the host pulls in with them) and reports their problems too. Those are
    # the host's, not ours, so only lines that name our file or unit count.
    ours = [
        ln
        for ln in (proc.stdout + proc.stderr).splitlines()
        if str(copy) in ln or ln.startswith(copy.name)
    ]
    return proc.returncode, ours


@needs_systemd_analyze
@pytest.mark.parametrize("unit_file", [UNIT, WEB_UNIT], ids=lambda p: p.name)
def test_systemd_analyze_verify_is_clean(tmp_path: Path, unit_file: Path) -> None:
    """systemd-analyze verify reports nothing about our units and exits 0."""
    rc, problems = _verify_problems(_verifiable_copy(tmp_path, unit=unit_file))
    assert problems == []
    assert rc == 0


@needs_systemd_analyze
def test_systemd_analyze_verify_check_catches_errors(tmp_path: Path) -> None:
    """The verify check is not vacuous: a bad key in our unit is reported and fails it."""
    rc, problems = _verify_problems(_verifiable_copy(tmp_path, extra="NoSuchKey=1\n"))
    assert any("NoSuchKey" in p for p in problems)
    assert rc != 0


@needs_systemd_analyze
@pytest.mark.parametrize("unit_file", [UNIT, WEB_UNIT], ids=lambda p: p.name)
def test_security_exposure_stays_low(tmp_path: Path, unit_file: Path) -> None:
    """systemd-analyze security rates each unit's exposure at 2.5 or better ("OK")."""
    assert SYSTEMD_ANALYZE is not None
    copy = _verifiable_copy(tmp_path, unit=unit_file)
    proc = subprocess.run(
        [SYSTEMD_ANALYZE, "security", "--offline=yes", str(copy)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    m = re.search(rf"Overall exposure level for {re.escape(copy.name)}: (\d+\.\d)", proc.stdout)
    if m is None and "offline" in proc.stderr:
        pytest.skip("this systemd-analyze has no offline security analysis (systemd < 250)")
    assert m, proc.stdout + proc.stderr
    assert float(m[1]) <= 2.5


# -- install.sh ---------------------------------------------------------------------------


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A minimal checkout (with a space in its path) holding what install.sh copies."""
    root = tmp_path / "my checkout"
    (root / "systemd").mkdir(parents=True)
    (root / "configs").mkdir()
    (root / "pyproject.toml").write_text('[project]\nname = "lineside"\n')
    (root / "configs" / "sim.toml").write_text("[node]\n")
    for f in (UNIT, WEB_UNIT, ENV_FILE):
        shutil.copy(f, root / "systemd" / f.name)
    return root


def _install(*args: str, as_nobody: bool = False) -> subprocess.CompletedProcess[str]:
    cmd = ["bash", "-s", "--", *args]
    if as_nobody:
        cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *cmd]
    # The script arrives on stdin (opened by us), so an unprivileged run needs no access to
    # the repository's directory.
    with INSTALL.open() as script:
        return subprocess.run(
            cmd, stdin=script, capture_output=True, text=True, timeout=60, cwd="/"
        )


def test_install_script_parses() -> None:
    """bash -n accepts install.sh and it is executable."""
    subprocess.run(["bash", "-n", str(INSTALL)], check=True, timeout=30)
    assert os.access(INSTALL, os.X_OK)


def test_install_dry_run_prints_actions_and_changes_nothing(checkout: Path) -> None:
    """--dry-run prints the venv install, config copies and daemon-reload, and executes none."""
    existed = {p: p.exists() for p in map(Path, ["/opt/lineside", "/etc/lineside"])}
    proc = _install("--dry-run", "--python", sys.executable, "--extras", "gpu", str(checkout))
    assert proc.returncode == 0, proc.stderr
    actions = [
        shlex.split(ln.removeprefix("[dry-run] "))
        for ln in proc.stdout.splitlines()
        if ln.startswith("[dry-run] ")
    ]
    pip = [
        "/opt/lineside/.venv/bin/pip",
        "install",
        "--no-cache-dir",
        "--disable-pip-version-check",
        "--upgrade",
        f"{checkout}[gpu]",
    ]
    assert pip in actions
    assert ["systemctl", "daemon-reload"] in actions
    for unit_file in (UNIT, WEB_UNIT):
        name = unit_file.name
        unit_copy = [*["install", "-m", "0644", "-o", "root", "-g", "root"]]
        assert [*unit_copy, str(checkout / "systemd" / name), f"/etc/systemd/system/{name}"] in (
            actions
        ) or f"unit /etc/systemd/system/{name} is up to date" in proc.stdout
    env_copy = [
        *["install", "-m", "0640", "-o", "root", "-g", "lineside"],
        str(checkout / "systemd" / "lineside.env"),
    ]
    assert [*env_copy, "/etc/lineside/lineside.env"] in actions or (
        "kept existing /etc/lineside/lineside.env" in proc.stdout
    )
    assert {p: p.exists() for p in existed} == existed


def test_install_refuses_non_root_without_dry_run(checkout: Path) -> None:
    """Without --dry-run an unprivileged user is refused before anything happens."""
    as_nobody = os.geteuid() == 0
    if as_nobody and shutil.which("setpriv") is None:
        pytest.skip("running as root and setpriv (util-linux) is missing to drop privileges")
    proc = _install(str(checkout), as_nobody=as_nobody)
    assert proc.returncode == 1
    assert "must run as root" in proc.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bogus"], "unknown option"),
        (["/nonexistent/checkout"], "checkout not found"),
        (["{empty}"], "missing pyproject.toml"),
        (["--extras", "gpu;rm", "{checkout}"], "--extras must be"),
    ],
)
def test_install_rejects_bad_arguments(
    args: list[str], message: str, checkout: Path, tmp_path: Path
) -> None:
    """Bad options, a missing or incomplete checkout and odd extras fail with a clear message."""
    empty = tmp_path / "empty"
    empty.mkdir()
    argv = [a.format(empty=empty, checkout=checkout) for a in args]
    proc = _install("--dry-run", "--python", sys.executable, *argv)
    assert proc.returncode == 1
    assert message in proc.stderr
