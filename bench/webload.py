"""The web view and headless browsers as extra load beside a bench's node.

``lineside web`` runs as the process it is in production, on the bench run's own
config (written as TOML into the run's state folder); each browser is the Debian
``chromium`` driven by its own ``chromedriver`` (Selenium, nothing is downloaded),
showing ``/live`` with every result and counting the cards that arrive. What the
load cost is measured from ``/proc``: the CPU seconds of the web process and of
every browser's process tree, from the moment the belt starts and in all.

    with WebLoad(cfg, browsers=2) as load:
        ... run the line, awaiting ``asyncio.to_thread(load.attach)`` before the belt ...
        figures = load.figures()
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import tomlkit

from hil.browser import BrowserMissing, open_chromium
from hil.plc_modbus import free_port
from hil.procstat import cpu_seconds
from node.config import Config

_ROOT = os.geteuid() == 0

_COUNT_CARDS = """
window.__cards = {added: 0, ids: new Set()};
new MutationObserver((changes) => {
  for (const c of changes) for (const n of c.addedNodes) {
    if (!(n instanceof HTMLElement) || !n.classList.contains('card')) continue;
    window.__cards.added += 1;
    window.__cards.ids.add(n.dataset.result);
  }
}).observe(document.getElementById('cards'), {childList: true});
"""


class WebLoadError(RuntimeError):
    """The web view or a browser did not come up (the reason and the web's log tail)."""


def _without_none(value: Any) -> Any:
    """A JSON config dump TOML can hold: keys whose value is None are left out (defaults)."""
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_none(v) for v in value]
    return value


def autogroup_nice(pid: int, nice: int) -> bool:
    """Lower the CPU share of ``pid``'s session (its autogroup) by ``nice``; False where the
    kernel groups no sessions (``/proc/<pid>/autogroup`` missing or not writable).

    With autogroups, a process's own nice counts only against its session's other
    processes: a process started in a session of its own (``setsid``, as here and as a
    systemd service) otherwise gets as much CPU as the node's whole session, whatever its
    nice. In production ``lineside-web.service`` gets its small share from ``CPUWeight=10``;
    the bench gives the web's session the equivalent.
    """
    try:
        Path(f"/proc/{pid}/autogroup").write_text(str(nice), encoding="ascii")
    except OSError:
        return False
    return True


def _killpg(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM) -> None:
    """Stop a process started in a session of its own, with everything it started."""
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        return
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        proc.wait(5)


@dataclass
class WebLoad:
    """``lineside web`` on ``cfg`` (its HMI and audit store on) and ``browsers`` live pages.

    Enter to write the config; :meth:`attach` (blocking: call it off the node's event loop,
    once the node's HMI server listens) starts the web, waits until it follows the node and
    opens the pages; :meth:`figures` reads what they saw; leaving stops everything, also on
    error.
    """

    cfg: Config
    browsers: int
    browsers_nice: int = 0
    """Run the browsers this much below normal CPU priority (0: at it; a viewer's browser
    is on another machine, where it takes nothing from the node). Run as root, Chromium
    would raise some of its own threads above normal (nice -8), over the node: the bench
    takes that right away from it (CAP_SYS_NICE), so it runs as an unprivileged user's."""
    timeout_s: float = 90.0
    url: str = field(default="", init=False)
    config_path: Path = field(init=False)
    web: subprocess.Popen[bytes] | None = field(default=None, init=False)
    drivers: list[Any] = field(default_factory=list, init=False)
    _port: int = field(default=0, init=False)
    _log: Path = field(init=False)
    _grouped: bool = field(default=False, init=False)
    _attached_at: float = field(default=0.0, init=False)
    _attach_s: float = field(default=0.0, init=False)
    _cpu_at_attach: tuple[float, float] = field(default=(0.0, 0.0), init=False)
    _status_at_attach: dict[str, Any] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        if not (self.cfg.hmi.enabled and self.cfg.audit.enabled):
            raise ValueError("the web view needs hmi.enabled and audit.enabled")
        state = self.cfg.node.state_dir.resolve()
        self._port = free_port()
        self.url = f"http://127.0.0.1:{self._port}"
        self.config_path = state / "bench-web.toml"
        self._log = state / "bench-web.log"
        self._browsers_dir = state / "bench-browsers"

    def __enter__(self) -> WebLoad:
        self.config_path.parent.mkdir(parents=True, exist_ok=True)
        data = _without_none(self.cfg.model_dump(mode="json"))
        data["node"]["state_dir"] = str(self.cfg.node.state_dir.resolve())
        data["web"] = {
            **data.get("web", {}),
            "host": "127.0.0.1",
            "port": self._port,
            "anonymous_view": True,
        }
        self.config_path.write_text(tomlkit.dumps(data), encoding="utf-8")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- start ------------------------------------------------------------------
    def attach(self) -> None:
        """Start the web, wait until it follows the node, open every browser on ``/live``
        and wait until the web counts them as viewers. Raises ``WebLoadError``."""
        t0 = time.monotonic()
        with open(self._log, "wb") as out:  # the child keeps its own copy
            self.web = subprocess.Popen(
                [sys.executable, "-m", "node", "--json-logs", "web", str(self.config_path)],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        # CPUWeight=10 of the unit against the node's 100: about what nice 10 weighs
        self._grouped = autogroup_nice(self.web.pid, self.cfg.web.nice)
        self._wait("the web view following the node", lambda: self.status()["node"]["connected"])
        for _ in range(self.browsers):
            driver = self._browser()
            self.drivers.append(driver)
            driver.get(f"{self.url}/live")
            driver.execute_script(_COUNT_CARDS)
        self._wait(
            f"{self.browsers} live pages following",
            lambda: self.status()["feed"]["viewers"] >= self.browsers,
        )
        self._attach_s = time.monotonic() - t0
        self._status_at_attach = self.status()
        self._cpu_at_attach = self._cpu()
        self._attached_at = time.monotonic()

    def _browser(self) -> Any:
        try:
            driver = open_chromium(
                self._browsers_dir, nice=self.browsers_nice, page_load_timeout_s=self.timeout_s
            )
        except BrowserMissing as exc:
            raise WebLoadError(f"--web needs {exc}") from exc
        if self.browsers_nice:
            autogroup_nice(driver.service.process.pid, self.browsers_nice)
        return driver

    def _wait(self, what: str, check: Any) -> None:
        end = time.monotonic() + self.timeout_s
        last: Any = None
        while time.monotonic() < end:
            if self.web is not None and self.web.poll() is not None:
                raise WebLoadError(f"lineside web exited ({self.web.returncode}){self._tail()}")
            try:
                if check():
                    return
            except (OSError, ValueError, KeyError) as exc:  # not listening yet
                last = exc
            time.sleep(0.2)
        raise WebLoadError(f"{what}: not within {self.timeout_s:g} s ({last!r}){self._tail()}")

    def _tail(self) -> str:
        try:
            return "; web log: " + self._log.read_text(errors="replace")[-1500:]
        except OSError:
            return ""

    # -- read -----------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """The web's ``/status``."""
        with urllib.request.urlopen(self.url + "/status", timeout=5) as r:
            return dict(json.loads(r.read()))

    def _cpu(self) -> tuple[float, float]:
        web = cpu_seconds([self.web.pid]) if self.web is not None else 0.0
        browsers = cpu_seconds([d.service.process.pid for d in self.drivers])
        return web, browsers

    def figures(self) -> dict[str, Any]:
        """What the load did: cards each browser received, the web feed's figures (records
        read from the store, updates dropped for slow pages), and CPU seconds."""
        self._settle()
        run_s = time.monotonic() - self._attached_at
        cpu = self._cpu()
        cards = []
        for d in self.drivers:
            added, unique = d.execute_script(
                "return [window.__cards.added, window.__cards.ids.size]"
            )
            cards.append({"added": int(added), "results": int(unique)})
        feed = self.status()["feed"]
        before = self._status_at_attach.get("feed") or {}
        return {
            "browsers": self.browsers,
            "priority": {
                "web": f"nice {self.cfg.web.nice}"
                + (f", its session's autogroup nice {self.cfg.web.nice}" if self._grouped else ""),
                "browsers": f"nice {self.browsers_nice}"
                + (
                    f", their sessions' autogroups nice {self.browsers_nice}"
                    if self._grouped
                    else ""
                )
                + (", without CAP_SYS_NICE" if _ROOT else ""),
            },
            "url": self.url,
            "attach_s": round(self._attach_s, 1),
            "attached": "before the belt started (attach_s not in the run)",
            "cards": cards,
            "feed": {
                "seen": feed["seen"] - before.get("seen", 0),
                "seen_at_attach": before.get("seen", 0),
                "dropped": feed["dropped"],
                "viewers": feed["viewers"],
            },
            "cpu_s": {
                "window_s": round(run_s, 1),
                "web": round(cpu[0] - self._cpu_at_attach[0], 2),
                "browsers": round(cpu[1] - self._cpu_at_attach[1], 2),
                "web_total": round(cpu[0], 2),
                "browsers_total": round(cpu[1], 2),
            },
        }

    def _settle(self, timeout_s: float = 5.0) -> None:
        """Let the web (at its low priority) finish handing on the last results: until its
        feed has read nothing new for three looks in a row."""
        end = time.monotonic() + timeout_s
        last, same = -1, 0
        while same < 3 and time.monotonic() < end:
            seen = self.status()["feed"]["seen"]
            same = same + 1 if seen == last else 0
            last = seen
            time.sleep(0.25)

    # -- stop ---------------------------------------------------------------------
    def close(self) -> None:
        """Quit the browsers and stop the web, each with its process group."""
        for d in self.drivers:
            with contextlib.suppress(Exception):  # its process group goes next anyway
                d.quit()
            _killpg(d.service.process)
        self.drivers.clear()
        if self.web is not None:
            _killpg(self.web)
