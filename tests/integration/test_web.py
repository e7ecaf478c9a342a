"""``lineside web`` beside a running sim node, driven by a real headless Chromium.

The node (``lineside run`` on configs/sim.toml, its HMI server on loopback) and the web
view (``lineside web``) run as the processes they are in production; Selenium drives
the Debian ``chromium`` through ``chromedriver`` (nothing is downloaded). Every page
is photographed into the test's folder (``LINESIDE_SCREENSHOTS`` names another).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import tomlkit

from hil.browser import BrowserMissing, open_chromium
from node.audit.reader import AuditReader
from node.config import DEFAULT_CONFIG
from node.hmi.users import hash_password

pytestmark = pytest.mark.slow

OPERATOR = ("olga", "orange-7")
ENGINEER = ("emil", "emerald-9")
GUESSED = ("otto", "onyx-3")
"""An operator whose password is guessed at (so the others' logins are not held back)."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Line:
    """The node and the web view, running."""

    state: Path
    config: Path
    url: str
    node: subprocess.Popen[str]
    web: subprocess.Popen[str]
    shots: Path

    @property
    def audit(self) -> Path:
        return self.state / "audit"

    def status(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.url + "/status", timeout=5) as r:
            return dict(json.loads(r.read()))

    def start_web(self) -> None:
        self.web = _spawn(["web", str(self.config)], self.state / "web.log")

    def reader(self) -> AuditReader:
        return AuditReader(self.audit, read_only=True)


def _spawn(args: list[str], log: Path) -> subprocess.Popen[str]:
    with open(log, "a", encoding="utf-8") as out:  # the child keeps its own copy
        return subprocess.Popen(
            [sys.executable, "-m", "node", "--json-logs", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )


def _stop(proc: subprocess.Popen[str], sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def _wait(what: str, check: Any, timeout_s: float, line: Line | None = None) -> Any:
    """``check()``'s first truthy answer; an OSError (nothing listening yet) or a browser
    error (the page being replaced) counts as not yet."""
    from selenium.common.exceptions import WebDriverException

    end = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < end:
        try:
            last = check()
        except (OSError, WebDriverException) as exc:
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(0.2)
    logs = ""
    if line is not None:
        logs = (line.state / "web.log").read_text()[-3000:]
    raise AssertionError(f"{what}: not within {timeout_s} s (last: {last!r}) {logs}")


@pytest.fixture(scope="module")
def line(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Line]:
    """configs/sim.toml with its state in a temp folder, the HMI server on a free loopback
    port with an operator and an engineer, and the web view on another."""
    state = tmp_path_factory.mktemp("web-line")
    doc = tomlkit.parse(DEFAULT_CONFIG.read_text(encoding="utf-8"))
    doc["node"]["state_dir"] = str(state)  # type: ignore[index]
    hmi = doc["hmi"]
    hmi["endpoint"] = f"opc.tcp://127.0.0.1:{_free_port()}/lineside/"  # type: ignore[index]
    hmi["security_policies"] = ["Basic256Sha256_SignAndEncrypt"]  # type: ignore[index]
    users = tomlkit.aot()
    for (name, password), role in (
        (OPERATOR, "operator"),
        (ENGINEER, "engineer"),
        (GUESSED, "operator"),
    ):
        users.append(
            tomlkit.item({"name": name, "role": role, "password_hash": hash_password(password)})
        )
    hmi["users"] = users  # type: ignore[index]
    port = _free_port()
    doc["web"] = {"host": "127.0.0.1", "port": port, "cards": 12}
    config = state / "node.toml"
    config.write_text(tomlkit.dumps(doc), encoding="utf-8")
    shots = Path(os.environ.get("LINESIDE_SCREENSHOTS") or state / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    node = _spawn(["run", str(config)], state / "node.log")
    web = _spawn(["web", str(config)], state / "web.log")
    ln = Line(state, config, f"http://127.0.0.1:{port}", node, web, shots)
    try:
        _wait(
            "the web view following the node with records",
            lambda: (s := ln.status())["node"]["connected"] and (s["feed"] or {}).get("seq"),
            90,
            ln,
        )
        yield ln
    finally:
        _stop(ln.web)
        _stop(ln.node, signal.SIGINT)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Headless Chromium from Debian, driven by its own chromedriver, without the right to
    raise its threads over the node's (``hil.browser``)."""
    try:
        driver = open_chromium(tmp_path_factory.mktemp("browser"))
    except BrowserMissing as exc:
        pytest.fail(f"{exc}: `make test` installs them")
    try:
        yield driver
    finally:
        driver.quit()


def _awaiting(line: Line, n: int) -> list[str]:
    """The ids of ``n`` results awaiting review (waiting for the line to make them)."""

    def ids() -> list[str]:
        with line.reader() as reader:
            found = [r.result_id for r in reader.awaiting_review(n)]
        return found if len(found) >= n else []

    return list(_wait(f"{n} results awaiting review", ids, 60))


def _login(browser: Any, line: Line, user: tuple[str, str], then: str = "/review") -> None:
    from selenium.webdriver.common.by import By

    browser.delete_all_cookies()
    browser.get(f"{line.url}/login?next={then}")
    browser.find_element(By.ID, "user").send_keys(user[0])
    browser.find_element(By.ID, "password").send_keys(user[1])
    browser.find_element(By.ID, "login-button").click()
    _wait("logged in", lambda: user[0] in browser.find_element(By.ID, "who").text, 15)


_WATCH = """
window.__arrivals = [];
const cards = document.getElementById('cards');
new MutationObserver((changes) => {
  const now = Date.now();
  for (const c of changes) for (const n of c.addedNodes) {
    if (!(n instanceof HTMLElement) || !n.classList.contains('card')) continue;
    const entry = {id: n.dataset.result, added: now, loaded: null,
                   sentence: n.querySelector('.sentence').textContent};
    const img = n.querySelector('img');
    if (img) {
      if (img.complete && img.naturalWidth) entry.loaded = now;
      else img.addEventListener('load', () => { entry.loaded = Date.now(); });
    }
    window.__arrivals.push(entry);
  }
}).observe(cards, {childList: true});
"""


def test_a_reject_shows_on_the_live_page_with_image_and_sentence_within_1_s(
    line: Line, browser: Any
) -> None:
    """Rejects published by the node appear as cards (picture loaded, the stored sentence)
    on the live page within 1 s of their publication time."""
    browser.get(f"{line.url}/live?only=rejects&lang=en")
    browser.execute_script(_WATCH)
    arrivals = _wait(
        "five new reject cards with their pictures",
        lambda: (
            [
                a
                for a in browser.execute_script("return window.__arrivals")
                if a["loaded"] is not None
            ][-5:]
            if len(browser.execute_script("return window.__arrivals")) >= 5
            else None
        ),
        60,
    )
    with line.reader() as reader:
        for a in arrivals:
            rec = reader.get(a["id"])
            assert rec is not None and rec.verdict == "reject"
            published_ms = rec.wall_time_ns / 1e6
            assert a["sentence"].strip() == rec.explanations["en"].strip()
            assert a["added"] - published_ms < 1000, (a, published_ms)
            assert a["loaded"] - published_ms < 1000, (a, published_ms)


def test_the_german_page_shows_german_sentences(line: Line, browser: Any) -> None:
    """With ?lang=de the page's words and every card's sentence are German (the audit
    store's German text for that part)."""
    from selenium.webdriver.common.by import By

    browser.get(f"{line.url}/live?lang=de")
    assert browser.find_element(By.CSS_SELECTOR, "nav a[href='/review']").text.startswith("Prüfen")
    cards = browser.execute_script(
        "return [...document.querySelectorAll('#cards .card')]"
        ".map(c => [c.dataset.result, c.querySelector('.sentence').textContent.trim()])"
    )
    assert cards
    with line.reader() as reader:
        for result_id, text in cards:
            rec = reader.get(result_id)
            assert rec is not None
            assert text == rec.explanations["de"].strip()
            assert text != rec.explanations["en"].strip()
    browser.save_screenshot(str(line.shots / "live-de.png"))
    browser.get(f"{line.url}/live?lang=en")  # the language is kept in a cookie


def test_a_review_clicked_in_the_browser_lands_in_the_audit_store(line: Line, browser: Any) -> None:
    """An operator confirms one reject (one click) and overrides another to pass (two
    clicks); both are in the audit store under their name with the verdicts given."""
    from selenium.webdriver.common.by import By

    _awaiting(line, 8)
    _login(browser, line, OPERATOR)
    items = browser.find_elements(By.CSS_SELECTOR, ".queue .item.reject")
    assert len(items) >= 2, "the sim line has rejects awaiting review"
    first, second = (i.get_attribute("id").removeprefix("item-") for i in items[:2])
    browser.find_element(By.CSS_SELECTOR, f"#item-{first} button.confirm").click()
    _wait("stored", lambda: "part" in browser.find_element(By.ID, "flash").text, 15)
    browser.find_element(By.CSS_SELECTOR, f"#item-{second} details.override summary").click()
    browser.find_element(
        By.CSS_SELECTOR, f"#item-{second} button.reason[value='false_alarm']"
    ).click()
    _wait("stored", lambda: "part" in browser.find_element(By.ID, "flash").text, 15)
    with line.reader() as reader:
        a, b = reader.reviews(first), reader.reviews(second)
    assert [(r.user, r.verdict) for r in a] == [("olga", "reject")]
    assert [(r.user, r.verdict, r.defect_type) for r in b] == [("olga", "pass", None)]
    assert "false alarm" in b[0].comment
    # the reviews feed the retraining set: the overridden part is a good image there now
    out = line.state / "dataset"
    done = subprocess.run(
        [
            *(sys.executable, "-m", "node", "audit", "dataset"),
            *("--store", str(line.audit), "--out", str(out)),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    names = {p.stem: p.parent.name for p in out.rglob("*.png")}
    stems = [n for n in names if second in n or n in second]
    assert stems and all(names[n] == "good" for n in stems), names
    browser.get(f"{line.url}/part/{second}")
    assert "olga" in browser.find_element(By.ID, "history").text


def test_the_review_queue_works_from_the_keyboard(line: Line, browser: Any) -> None:
    """On the review page ``j`` moves to the next item and ``c`` confirms it; ``o`` then a
    digit overrides the focused one: two reviews stored, by key presses alone."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    _awaiting(line, 3)
    _login(browser, line, OPERATOR)
    ids = [i.get_attribute("id")[5:] for i in browser.find_elements(By.CSS_SELECTOR, ".item")]
    ActionChains(browser).send_keys("j").send_keys("c").perform()
    _wait("stored", lambda: "part" in browser.find_element(By.ID, "flash").text, 15)
    with line.reader() as reader:
        assert [r.user for r in reader.reviews(ids[1])] == ["olga"]
    focused = browser.execute_script("return document.activeElement.id").removeprefix("item-")
    with line.reader() as reader:
        first = reader.get(focused)
    assert first is not None
    ActionChains(browser).send_keys("o").send_keys("1").perform()

    def reviews() -> list[Any]:
        with line.reader() as reader:
            return list(reader.reviews(focused))

    (review,) = _wait("the override stored", reviews, 15)
    assert review.verdict != first.verdict and review.user == "olga"


def test_reviews_anonymous_or_with_a_bad_csrf_token_are_refused(line: Line, browser: Any) -> None:
    """The same review form posted without a login, or logged in with a forged CSRF token,
    is answered 403 and stores nothing."""
    from selenium.webdriver.common.by import By

    target = _awaiting(line, 1)[0]
    post = """
    const [url, csrf, done] = [arguments[0], arguments[1], arguments[arguments.length - 1]];
    const body = new URLSearchParams({csrf: csrf, action: 'confirm', next: '/review'});
    fetch(url, {method: 'POST', body: body, redirect: 'manual'})
      .then(r => done(r.status)).catch(e => done(String(e)));
    """
    browser.delete_all_cookies()
    browser.get(f"{line.url}/live")
    assert browser.execute_async_script(post, f"{line.url}/review/{target}", "x") == 403
    _login(browser, line, OPERATOR, then="/live")
    forged = browser.execute_async_script(post, f"{line.url}/review/{target}", "forged")
    assert forged == 403
    # the page's own form with its token tampered, submitted by clicking
    browser.get(f"{line.url}/part/{target}")
    browser.execute_script("document.querySelector('form.review input[name=csrf]').value='x'")
    browser.find_element(By.CSS_SELECTOR, "form.review button.confirm").click()
    assert "CSRF" in _wait("refused", lambda: browser.find_element(By.ID, "error").text, 15)
    with line.reader() as reader:
        assert reader.reviews(target) == []


def test_every_page_renders_and_is_photographed(line: Line, browser: Any) -> None:
    """Every page renders for an engineer (its main element present, no error) and is
    photographed: live, review queue, one part, trends (the plot loaded), model & recipe,
    and the login page."""
    from selenium.webdriver.common.by import By

    _login(browser, line, ENGINEER, then="/live")
    _wait("cards", lambda: browser.find_elements(By.CSS_SELECTOR, "#cards .card img"), 30)
    time.sleep(1.0)  # let the pictures load
    browser.save_screenshot(str(line.shots / "live.png"))
    _awaiting(line, 1)
    browser.get(f"{line.url}/review")
    items = browser.find_elements(By.CSS_SELECTOR, ".queue .item")
    assert items
    browser.save_screenshot(str(line.shots / "review.png"))
    browser.get(f"{line.url}/part/{items[0].get_attribute('id')[5:]}")
    assert browser.find_element(By.ID, "sentence").text
    browser.save_screenshot(str(line.shots / "part.png"))
    browser.get(f"{line.url}/trends")
    _wait(
        "the trend plot",
        lambda: browser.execute_script(
            "const i = document.getElementById('trends-plot'); return i.complete && i.naturalWidth"
        ),
        30,
    )
    browser.save_screenshot(str(line.shots / "trends.png"))
    csv_text = browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "fetch('/trends.csv?hours=1').then(r => r.text()).then(done);"
    )
    header, *rows = csv_text.strip().splitlines()
    assert header.startswith("bucket_start_utc,parts,rejects") and rows
    browser.get(f"{line.url}/model")
    assert "moulded-plastic" in browser.find_element(By.TAG_NAME, "main").text
    assert browser.find_elements(By.CSS_SELECTOR, "#rules tr")
    browser.save_screenshot(str(line.shots / "model.png"))
    browser.delete_all_cookies()
    browser.get(f"{line.url}/login")
    browser.save_screenshot(str(line.shots / "login.png"))
    for name in ("live", "review", "part", "trends", "model", "login"):
        assert (line.shots / f"{name}.png").stat().st_size > 10_000


def test_killing_the_web_view_mid_run_costs_the_line_nothing_and_loses_no_review(
    line: Line, browser: Any
) -> None:
    """A review made just before ``kill -9`` of the web process is in the store after it;
    the node keeps judging with no fail-safe while the web is down and restarting; the
    restarted web follows again and a review through it lands."""
    from selenium.webdriver.common.by import By

    _awaiting(line, 2)
    _login(browser, line, OPERATOR)
    target = browser.find_elements(By.CSS_SELECTOR, ".queue .item")[0].get_attribute("id")[5:]
    browser.find_element(By.CSS_SELECTOR, f"#item-{target} button.confirm").click()
    _wait("stored", lambda: "part" in browser.find_element(By.ID, "flash").text, 15)
    before = line.status()["node"]["values"]
    killed_ns = time.time_ns()
    os.killpg(line.web.pid, signal.SIGKILL)
    line.web.wait(10)
    time.sleep(3.0)
    line.start_web()
    after = _wait(
        "the restarted web following the node",
        lambda: (s := line.status())["node"]["connected"] and s["node"]["values"],
        60,
        line,
    )
    back_ns = time.time_ns()
    assert after["Counters.Inspected"] > before["Counters.Inspected"]
    with line.reader() as reader:
        window = reader.query(since_ns=killed_ns, until_ns=back_ns, limit=100_000)
    assert len(window) > 40, "the node judged on while the web was down"
    assert [r.reason for r in window if r.fail_safe] == []
    with line.reader() as reader:
        assert [r.user for r in reader.reviews(target)] == ["olga"]
    _login(browser, line, OPERATOR)
    again = browser.find_elements(By.CSS_SELECTOR, ".queue .item")[0].get_attribute("id")[5:]
    browser.find_element(By.CSS_SELECTOR, f"#item-{again} button.confirm").click()
    _wait("stored", lambda: "part" in browser.find_element(By.ID, "flash").text, 15)
    with line.reader() as reader:
        assert [r.user for r in reader.reviews(again)] == ["olga"]


def test_wrong_passwords_back_off_through_the_web_too(line: Line, browser: Any) -> None:
    """Three wrong passwords for one name, then the right one at once: refused with the
    wait to come (the node's and the web's back-off); other names are not held back."""
    from selenium.webdriver.common.by import By

    def attempt(user: tuple[str, str]) -> str:
        browser.delete_all_cookies()
        browser.get(f"{line.url}/login")
        browser.find_element(By.ID, "user").send_keys(user[0])
        browser.find_element(By.ID, "password").send_keys(user[1])
        browser.find_element(By.ID, "login-button").click()

        def answered() -> tuple[str] | None:
            """(the flash's text,), or ("",) once logged in; None while the page loads."""
            flash = browser.find_elements(By.ID, "flash")
            if flash:
                return (str(flash[0].text),)
            return ("",) if user[0] in browser.find_element(By.ID, "who").text else None

        return str(_wait("the login's answer", answered, 15)[0])

    for _ in range(3):
        assert "wrong name or password" in attempt((GUESSED[0], "guess"))
    assert "try again in" in attempt(GUESSED)
    assert attempt(OPERATOR) == ""
    assert "olga" in browser.find_element(By.ID, "who").text


def test_https_serves_the_nodes_certificate_and_secure_cookies(line: Line) -> None:
    """With web.https the same view is served over TLS with the node's own certificate
    (a client that trusts that certificate connects to localhost), and the cookies it sets
    are Secure."""
    import ssl

    doc = tomlkit.parse(line.config.read_text(encoding="utf-8"))
    port = _free_port()
    doc["web"]["port"] = port  # type: ignore[index]
    doc["web"]["https"] = True  # type: ignore[index]
    config = line.state / "https.toml"
    config.write_text(tomlkit.dumps(doc), encoding="utf-8")
    web = _spawn(["web", str(config)], line.state / "web-https.log")
    try:
        pem = line.state / "web-pki" / "https-cert.pem"
        ctx = ssl.create_default_context(cafile=None)

        def fetch() -> Any:
            if not pem.is_file():
                return None
            ctx.load_verify_locations(cafile=str(pem))
            with urllib.request.urlopen(f"https://localhost:{port}/login", context=ctx) as r:
                return r.status, r.headers.get_all("set-cookie")

        status, cookies = _wait("the view over HTTPS", fetch, 30)
        assert status == 200
        assert cookies and all("Secure" in c for c in cookies)
        with pytest.raises(OSError):  # plain HTTP is not served there
            urllib.request.urlopen(f"http://127.0.0.1:{port}/login", timeout=5)
    finally:
        _stop(web)


def _node_state(line: Line) -> str:
    return str(line.status()["node"]["values"].get("Health.State"))


def test_commands_reach_the_node_as_the_user_and_their_role_decides(
    line: Line, browser: Any
) -> None:
    """An operator sees Halt and Reset only, and a Stop they forge is refused by the node
    (state unchanged); the engineer stops and starts inspecting by clicking, and the node's
    log names them for each call."""
    from selenium.webdriver.common.by import By

    _login(browser, line, OPERATOR, then="/live")
    assert browser.find_elements(By.ID, "cmd-halt")
    assert not browser.find_elements(By.ID, "cmd-stop")
    state = _node_state(line)
    browser.execute_script(
        "const f = document.getElementById('commands');"
        "const b = document.createElement('button'); b.name = 'command'; b.value = 'stop';"
        "b.id = 'forged'; f.appendChild(b);"
    )
    browser.find_element(By.ID, "forged").click()
    assert "role" in _wait("refused", lambda: browser.find_element(By.ID, "flash").text, 15)
    time.sleep(1.0)
    assert _node_state(line) == state
    _login(browser, line, ENGINEER, then="/live")
    if _node_state(line) == "Error":  # a fault of the busy machine (e.g. a late pulse)
        browser.find_element(By.ID, "cmd-reset").click()
    _wait("inspecting", lambda: _node_state(line) == "ContinuousExecution", 15)
    browser.find_element(By.ID, "cmd-stop").click()
    _wait("stopped", lambda: _node_state(line) == "Ready", 15)
    browser.find_element(By.ID, "cmd-start").click()
    _wait("inspecting again", lambda: _node_state(line) == "ContinuousExecution", 15)
    calls = [
        json.loads(ln)
        for ln in (line.state / "node.log").read_text().splitlines()
        if '"hmi_call' in ln
    ]
    named = {(c["event"], c.get("method"), c.get("user")) for c in calls}
    assert ("hmi_call", "stop", "emil") in named
    assert ("hmi_call", "start_continuous", "emil") in named
    assert ("hmi_call_denied", "stop", "olga") in named
