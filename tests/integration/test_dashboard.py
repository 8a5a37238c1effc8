"""The dashboard end to end in headless Chromium (Debian's chromium + chromium-driver, driven by Selenium)
against the real service, the real stream pipeline replaying real bars, and the real Redis.

The data and champions are test_stream_pipeline's `home` (AAPL 1-hour and ES=F 1-minute bars, ridge
champions trained by the flow); the service runs with two users (a viewer and an admin, Argon2 hashes) and
a JWT key. A viewer signs in, the AAPL candles draw from /history, the page's five sockets connect with the
token, the tails of both series are replayed onto the bus and handled by two consumers, and the page shows
the live prediction and real risk alerts; the viewer has no reload button and signs out. An admin signs in
and reloads the models: the service's audit log gets the line. /docs renders offline in the same browser.
A screenshot of the dashboard after the replay goes to the test's temp dir and to docs/dashboard.png.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_serving import Server, _start, _wait_up
from test_stream_pipeline import (
    PARTITIONS,
    SERIES,
    TAIL,
    Home,
    _wait_drained,
    _wait_relay_subscribed,
    home,  # noqa: F401  (a fixture)
)
from tests_support import service_unavailable

from finstream.channels import CHANNELS

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
USERS = {"vera": ("viewer", "vera-password-1"), "ada": ("admin", "ada-password-12")}
WAIT_S = 30


@pytest.fixture(scope="module")
def live(home: Home, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:  # noqa: F811
    """The service (with users and a JWT key) and two running consumers; nothing replayed yet."""
    from serving.tokens import hash_password
    from stream.config import StreamConfig
    from stream.runner import Supervisor

    users = {name: {"role": role, "password_hash": hash_password(pw)} for name, (role, pw) in USERS.items()}
    workdir = tmp_path_factory.mktemp("dashboard-service")
    server = _start(
        home.settings.paths.home,
        workdir,
        "dashboard-service",
        FINSTREAM_USERS=json.dumps(users),
        FINSTREAM_JWT_SECRET=secrets.token_hex(32),
    )
    config = StreamConfig(partitions=PARTITIONS, batch_size=3, min_idle_ms=5000, block_ms=50, model_poll_s=0)
    intervals = [i for _, i in SERIES]
    supervisor = Supervisor(home.settings, config, intervals, consumers=2, threads=True)
    thread = threading.Thread(target=supervisor.run, daemon=True)
    buses = {i: config.bus(home.settings, i) for i in intervals}
    try:
        _wait_up(server, "/ready")
        thread.start()
        deadline = time.monotonic() + 120
        while len(supervisor.workers) < 2 or any(w.state != "running" for w in supervisor.workers):
            assert time.monotonic() < deadline, "the consumers did not start in 120 s"
            time.sleep(0.1)
        yield {"server": server, "config": config, "buses": buses, "home": home}
    finally:
        supervisor.stop()
        thread.join(60)
        server.stop()
        for bus in buses.values():
            bus.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Debian Chromium through its chromedriver, with a throw-away profile."""
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver_path is None:
        service_unavailable("chromium / chromedriver missing: apt-get install chromium chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="finstream-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={profile}", "--window-size=1400,1300",
    ):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _until(driver: Any, condition: Any, what: str, timeout: float = WAIT_S) -> Any:
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.1).until(condition)
    except TimeoutException:
        logs = driver.execute_script("return document.body.innerText.slice(0, 2000)")
        pytest.fail(f"timed out after {timeout} s waiting for {what}; page text:\n{logs}")


def _el(driver: Any, testid: str) -> Any:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, f'[data-testid="{testid}"]')


def _all(driver: Any, css: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return list(driver.find_elements(By.CSS_SELECTOR, css))


def _sign_in(driver: Any, url: str, user: str) -> None:
    driver.get(url + "/dashboard")
    _until(driver, lambda d: _el(d, "username").is_displayed(), "the sign-in form")
    _el(driver, "username").send_keys(user)
    _el(driver, "password").send_keys(USERS[user][1])
    _el(driver, "sign-in").click()
    _until(driver, lambda d: _el(d, "app-view").is_displayed(), f"{user} signed in")


def _sockets_connected(url: str) -> bool:
    """The service counts a socket only once it is authenticated and subscribed to the relay."""
    text = httpx.get(url + "/metrics", timeout=5).text
    return all(
        (m := re.search(rf'finstream_ws_connections\{{channel="{c}"\}} (\S+)', text))
        and float(m.group(1)) >= 1
        for c in CHANNELS
    )


def test_dashboard_signs_in_draws_and_follows_the_stream_live(
    live: dict[str, Any], browser: Any, tmp_path: Path
) -> None:
    from stream.replay import Replayer, load_history

    server: Server = live["server"]
    url, driver, home_ = server.url, browser, live["home"]

    # viewer: sign in, the AAPL 1-hour candles draw from /history
    _sign_in(driver, url, "vera")
    assert _el(driver, "who").get_attribute("data-role") == "viewer"
    assert not _el(driver, "reload-models").is_displayed()
    clicked = time.perf_counter()
    _el(driver, "symbol").send_keys("AAPL")
    _el(driver, "show-symbol").click()
    chart = _until(
        driver,
        lambda d: int(_el(d, "chart").get_attribute("data-points")) > 0 and _el(d, "chart"),
        "the chart",
    )
    first_chart_s = time.perf_counter() - clicked
    assert chart.get_attribute("data-kind") == "candles"  # intraday bars
    assert _all(driver, '[data-testid="chart"] canvas')
    points = int(chart.get_attribute("data-points"))
    _until(driver, lambda d: _el(d, "risk-summary").get_attribute("data-loaded") == "ok", "the risk panel")
    assert _all(driver, '[data-testid="var-table"] tbody tr')
    _until(driver, lambda d: _all(d, '[data-testid="models-table"] tr[data-model]'), "the models panel")

    # the page's sockets are live; then replay the tails of both series through two consumers
    deadline = time.monotonic() + WAIT_S
    while not _sockets_connected(url):
        assert time.monotonic() < deadline, "the page's sockets did not connect"
        time.sleep(0.2)
    _wait_relay_subscribed(home_.client, home_.project)
    bars = load_history(home_.settings, list(SERIES), "stored", last=TAIL)
    Replayer(live["buses"], rate=300).run(bars)
    drained = _wait_drained(live["buses"], live["config"].group)
    assert drained["1h"]["processed"] == TAIL

    prediction = _until(
        driver,
        lambda d: _el(d, "prediction").get_attribute("data-symbol") == "AAPL" and _el(d, "prediction"),
        "a live AAPL prediction",
    )
    assert "predicted return" in prediction.text and "P(up)" in prediction.text
    assert _el(driver, "prediction-signal").text in ("long", "flat")
    assert "not gated (manual)" in _el(driver, "prediction-gates").text  # promoted by hand in `home`
    assert _all(driver, '[data-testid="predictions"] tr[data-symbol="AAPL"]')
    alerts = _until(driver, lambda d: _all(d, '[data-testid="alerts"] li'), "a live risk alert")
    severities = {a.get_attribute("data-severity") for a in alerts}
    assert severities <= {"info", "warning", "critical"} and severities & {"warning", "critical"}
    _until(driver, lambda d: _el(d, "last-bar").get_attribute("data-ts"), "a live AAPL bar")
    metrics_row = '[data-testid="stream-metrics"] tr[data-interval="1h"]'
    _until(driver, lambda d: _all(d, metrics_row), "stream metrics")
    _until(driver, lambda d: _el(d, "pipeline-status").get_attribute("data-state"), "pipeline status")
    assert all(
        _el(driver, f"ws-{c}").get_attribute("data-state") == "open" for c in CHANNELS
    )  # no socket was refused
    assert int(_el(driver, "chart").get_attribute("data-points")) >= points

    shot = tmp_path / "dashboard.png"
    assert driver.save_screenshot(str(shot))
    (REPO / "docs").mkdir(exist_ok=True)
    shutil.copyfile(shot, REPO / "docs" / "dashboard.png")
    weight = driver.execute_script(
        "return performance.getEntriesByType('navigation').concat(performance.getEntriesByType('resource'))"
        ".filter(e => !e.name.includes('/ws/')).map(e => [e.name, e.transferSize || e.encodedBodySize || 0])"
    )
    assert all(name.startswith(url) for name, _ in weight), weight  # nothing off-host
    page_kb = sum(size for _, size in weight if "/dashboard" in _) / 1024
    print(f"dashboard: page weight {page_kb:.0f} KiB, first chart {first_chart_s * 1000:.0f} ms after Show")
    print(f"dashboard: {len(alerts)} alerts, severities {sorted(severities)}; screenshot {shot}")

    # sign out: back to the form, token gone
    _el(driver, "sign-out").click()
    _until(driver, lambda d: _el(d, "signin-view").is_displayed(), "the sign-in form after sign-out")
    assert driver.execute_script("return sessionStorage.getItem('finstream.session')") is None
    assert not _el(driver, "app-view").is_displayed()

    # admin: the reload button reaches /admin/reload and the audit log
    audit = home_.settings.paths.home / "audit" / "admin.jsonl"
    before = audit.read_text().count("\n") if audit.exists() else 0
    _sign_in(driver, url, "ada")
    reload = _el(driver, "reload-models")
    assert reload.is_displayed()
    reload.click()
    _until(driver, lambda d: _el(d, "reload-result").get_attribute("data-outcome"), "the reload answer")
    assert _el(driver, "reload-result").get_attribute("data-outcome") == "ok"
    lines = [json.loads(line) for line in audit.read_text().splitlines()[before:]]
    assert [(e["action"], e["role"], e["outcome"]) for e in lines] == [("reload", "admin", "ok")]
    assert "ada" in lines[0]["actor"]
    _el(driver, "sign-out").click()


def test_docs_render_offline_in_the_browser(live: dict[str, Any], browser: Any) -> None:
    url = live["server"].url
    browser.get(url + "/docs")
    _until(browser, lambda d: len(_all(d, ".opblock")) > 5, "Swagger UI's operations list")
    assert _all(browser, ".opblock-summary-path")
    names = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert names and all(n.startswith(url) for n in names), names  # no CDN
