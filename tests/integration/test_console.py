"""The web console in a real headless Chromium (Debian's chromium + chromium-driver, through Selenium),
against a real gateway (with a bearer token), command handler, invoice-list projector and event journal
on the real broker. Screenshots of every step go to .cache/test-artifacts/console/ (the path is printed).
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import httpx
import pytest
from confluent_kafka import Producer
from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException, TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.select import Select
from selenium.webdriver.support.ui import WebDriverWait

from foldline.aggregate import AggregateSpec
from foldline.gateway import Gateway, GatewayServer
from foldline.gateway.views import ViewService
from foldline.projection import load_projection, open_target
from foldline.projection.journal import journal_projection, journal_view
from foldline.projection.wiring import build_projector
from foldline.settings import GatewaySettings, KafkaSettings, ProjectorSettings
from foldline.topics import TopicNames
from tests.conftest import REPO

pytestmark = pytest.mark.kafka

TOKEN = "console-test-token"
XSS = "<img src=x onerror=alert(1)>"
ARTIFACTS = REPO / ".cache" / "test-artifacts" / "console"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1000",
)


@pytest.fixture
def console_stack(kafka_bootstrap, invoices_aggregate, run_handler, tmp_path):
    cls = invoices_aggregate(partitions=2)
    run_handler(cls(), commit_interval_ms=5)
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    database = f"sqlite:///{tmp_path / 'views.db'}"
    specs = [
        load_projection("foldline.examples.invoices.views:InvoiceList", aggregate_name=cls.name),
        journal_projection(cls),
    ]
    projectors = []
    for spec in specs:
        projector = build_projector(spec, ProjectorSettings(kafka=kafka, database=database, batch_wait_ms=5))
        thread = threading.Thread(target=projector.run, daemon=True)
        thread.start()
        projectors.append((projector, thread))
    deadline = time.monotonic() + 60
    while not all(p.ready() for p, _ in projectors):
        assert time.monotonic() < deadline, "projectors did not become ready"
        time.sleep(0.05)
    views = ViewService(
        database, {"invoice-list": cls.name}, opener=open_target, journals={cls.name: journal_view(cls.name)}
    )
    settings = GatewaySettings(kafka=kafka, host="127.0.0.1", token=TOKEN, view_poll_interval_s=0.2)
    with GatewayServer(Gateway([AggregateSpec(cls())], settings, views)) as server:
        yield cls.name, server.url
    for projector, _ in projectors:
        projector.stop()
    for _, thread in projectors:
        thread.join(30)


@pytest.fixture
def browser(tmp_path):
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    service = Service(executable_path=shutil.which("chromedriver") or "/usr/bin/chromedriver")
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


class Steps:
    """Screenshots numbered in the order the test takes them."""

    def __init__(self, driver, where: Path) -> None:
        self.driver, self.where, self.n = driver, where, 0
        shutil.rmtree(where, ignore_errors=True)
        where.mkdir(parents=True)
        print(f"console screenshots: {where}")

    def shot(self, name: str) -> None:
        self.n += 1
        self.driver.save_screenshot(str(self.where / f"{self.n:02d}-{name}.png"))


def wait_text(driver, css: str, text: str, timeout: float = 30) -> str:
    """Wait until the element's text contains ``text``; its text then."""
    found: list[str] = []

    def check(d):
        for element in d.find_elements(By.CSS_SELECTOR, css):
            if text in element.text:
                found.append(element.text)
                return True
        return False

    WebDriverWait(driver, timeout, poll_frequency=0.1).until(check, f"{css!r} never showed {text!r}")
    return found[-1]


def fill(driver, fields: dict[str, str]) -> None:
    for name, value in fields.items():
        element = driver.find_element(By.CSS_SELECTOR, f'#command-fields [data-field="{name}"]')
        if element.get_attribute("type") == "date":  # a date input's typing order depends on the locale
            driver.execute_script(
                "arguments[0].value = arguments[1]; arguments[0].dispatchEvent(new Event('change'))", element, value
            )
        else:
            element.clear()
            element.send_keys(value)


def send(driver, command: str, fields: dict[str, str], expected: str | None = None) -> None:
    Select(driver.find_element(By.ID, "command-type")).select_by_value(command)
    fill(driver, fields)
    if expected is not None:
        box = driver.find_element(By.ID, "expected-version")
        box.clear()
        box.send_keys(expected)
    driver.find_element(By.ID, "submit-command").click()


def refresh_until(driver, css: str, text: str, timeout: float = 60) -> str:
    """Press the panel's Refresh button until the element shows ``text``; its text then."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return wait_text(driver, css, text, timeout=3)
        except TimeoutException:
            assert time.monotonic() < deadline, f"{css!r} never showed {text!r}"
            driver.find_element(By.XPATH, "//button[.='Refresh']").click()


def no_alert(driver) -> bool:
    try:
        driver.switch_to.alert  # noqa: B018 - raises when no alert is open
    except NoAlertPresentException:
        return True
    return False


def test_console_in_a_real_browser(console_stack, browser, kafka_bootstrap):
    agg, url = console_stack
    steps = Steps(browser, ARTIFACTS)

    # The page and its files need no token (they hold no data) and carry a strict CSP; the API needs it.
    page = httpx.get(url + "/")
    assert page.status_code == 200 and '<script src="/console/console.js"' in page.text
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp and "unsafe-inline" not in csp
    assert httpx.get(url + "/console/console.js").headers["content-security-policy"] == csp
    assert httpx.get(url + "/aggregates").status_code == 401
    assert httpx.get(url + "/console/../aggregates").status_code == 401

    browser.get(url + "/")
    wait_text(browser, "#connection", "token")  # without the token the API refuses, and the page says so
    steps.shot("no-token")
    browser.find_element(By.ID, "token").send_keys(TOKEN + Keys.ENTER)
    wait_text(browser, "#aggregates", agg)
    wait_text(browser, "#views", "invoice-list")
    steps.shot("aggregates-and-views")

    # The aggregate page: create an invoice through the generated form (the customer is markup).
    browser.execute_script("window.__notReloaded = true")
    browser.get(f"{url}/#/aggregate/{agg}/inv-ui")
    browser.execute_script("window.__notReloaded = true")
    wait_text(browser, "#current-state", "No events yet")
    assert browser.find_element(By.ID, "expected-version").get_attribute("value") == "0"
    create = {"customer": XSS, "currency": "EUR", "issue_date": "2026-11-01", "due_date": "2026-12-01"}
    send(browser, "CreateInvoice", create)
    wait_text(browser, "#command-result", "accepted · version 1 (InvoiceCreated)")
    wait_text(browser, "#current-state", "version 1")
    assert XSS in browser.find_element(By.ID, "current-state").text
    steps.shot("created")

    for line_id, price in (("a", "100.00"), ("b", "45.50")):
        send(
            browser,
            "AddLineItem",
            {"line_id": line_id, "description": f"item {line_id}", "quantity": "3", "unit_price": price},
        )
        wait_text(browser, "#timeline", f"item {line_id}")
    wait_text(browser, "#current-state", "version 3")
    assert browser.find_element(By.ID, "expected-version").get_attribute("value") == "3"
    rows = browser.find_elements(By.CSS_SELECTOR, "#timeline tbody tr")
    assert [r.find_elements(By.TAG_NAME, "td")[1].text for r in rows] == [
        "InvoiceCreated",
        "LineItemAdded",
        "LineItemAdded",
    ]
    assert all(r.find_elements(By.TAG_NAME, "td")[3].text for r in rows)  # command ids
    steps.shot("timeline")

    # The slider: back to version 1, the state before any line; forward to 2, one line.
    slider = browser.find_element(By.ID, "version-slider")
    slider.send_keys(Keys.HOME)
    wait_text(browser, "#state-at-label", "version 0 of 3")
    slider.send_keys(Keys.ARROW_RIGHT)
    wait_text(browser, "#state-at-label", "version 1 of 3")
    assert '"lines": []' in browser.find_element(By.ID, "state-at").text
    steps.shot("state-at-version-1")
    slider.send_keys(Keys.ARROW_RIGHT)
    wait_text(browser, "#state-at-label", "version 2 of 3")
    state_at_2 = browser.find_element(By.ID, "state-at").text
    assert '"line_id": "a"' in state_at_2 and '"line_id": "b"' not in state_at_2
    steps.shot("state-at-version-2")

    # A rejected command shows its reason; a stale expected version is a conflict.
    send(browser, "RemoveLineItem", {"line_id": "zzz"})
    wait_text(browser, "#command-result", "rejected · line item 'zzz' does not exist")
    steps.shot("rejected")
    send(browser, "RemoveLineItem", {"line_id": "a"}, expected="1")
    wait_text(browser, "#command-result", "conflict")
    wait_text(browser, "#results", "rejected")  # the live results list saw them too
    steps.shot("conflict")

    # Dead letters, as text: a command of no known type whose fields are markup (the handler dead-letters
    # it), and a record on the dead-letter topic that is no dead letter at all (shown raw, escaped).
    topics = TopicNames(agg)
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "partitioner": "murmur2_random"})
    producer.produce(topics.dead_letters, key=b"inv-ui", value=b"\xff<b>raw</b> " + XSS.encode())
    hostile = {"command_id": "cmd-dead", "aggregate_id": "inv-ui", "type": XSS, "payload": {"customer": XSS}}
    producer.produce(topics.commands, key=b"inv-ui", value=json.dumps(hostile).encode())
    assert producer.flush(30) == 0
    wait_text(browser, "#results", "failed")  # its failed result arrives live; the panel reloads
    dead = refresh_until(browser, "#dead-letters", "cmd-dead")
    assert "unknown_type" in dead and XSS in dead and '"customer": "' + XSS in dead
    assert "not a dead letter" in dead and "\\xff<b>raw</b> " + XSS in dead
    assert browser.find_elements(By.CSS_SELECTOR, "#dead-letters img, #dead-letters b") == []
    browser.execute_script("document.getElementById('dead-letters').scrollIntoView()")
    steps.shot("dead-letters")
    browser.get(f"{url}/#/aggregate/{agg}")  # the aggregate's page without an id: all its dead letters
    browser.execute_script("window.__notReloaded = true")
    wait_text(browser, "#dead-letters", "cmd-dead")
    steps.shot("dead-letters-of-the-aggregate")
    assert browser.find_elements(By.TAG_NAME, "img") == [] and no_alert(browser)

    # The view: the row is there, the customer is text; a command from elsewhere updates it live.
    browser.find_element(By.LINK_TEXT, "invoice-list").click()
    wait_text(browser, "#view-rows", "inv-ui")
    wait_text(browser, "#view-status", "live")
    assert XSS in browser.find_element(By.ID, "view-rows").text
    steps.shot("view")
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as client:
        r = client.post(
            f"/aggregates/{agg}/commands",
            json={
                "aggregate_id": "inv-ui",
                "type": "AddLineItem",
                "payload": {"line_id": "c", "description": "more", "quantity": 1, "unit_price": "10.00"},
            },
        )
        assert r.status_code == 200, r.text
    wait_text(browser, "#view-rows", "446.50")  # 3 x 100.00 + 3 x 45.50 + 10.00, without a reload
    steps.shot("view-live-update")
    assert browser.execute_script("return window.__notReloaded === true"), "the page was reloaded"

    # Filters and paging of the view.
    filter_box = browser.find_element(By.CSS_SELECTOR, '#view-rows input[data-column="status"]')
    filter_box.send_keys("paid" + Keys.ENTER)
    wait_text(browser, "#page-info", "no rows on this page")
    steps.shot("view-filtered")
    filter_box = browser.find_element(By.CSS_SELECTOR, '#view-rows input[data-column="status"]')
    filter_box.clear()
    filter_box.send_keys(Keys.ENTER)
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as client:
        for n in range(11):
            payload = {"customer": f"C{n:02d}", "currency": "EUR", "issue_date": "2026-11-01", "due_date": "2026-12-01"}
            r = client.post(
                f"/aggregates/{agg}/commands",
                json={"aggregate_id": f"inv-p{n:02d}", "type": "CreateInvoice", "payload": payload},
            )
            assert r.status_code == 200, r.text
    Select(browser.find_element(By.CSS_SELECTOR, ".pager select")).select_by_value("10")
    wait_text(browser, "#page-info", "rows 1 to 10")
    browser.find_element(By.XPATH, "//button[contains(., 'Next')]").click()
    wait_text(browser, "#page-info", "rows 11 to 12")
    steps.shot("view-page-2")
    row = browser.find_element(By.CSS_SELECTOR, "#view-rows tbody tr")
    row.click()  # a row opens its aggregate
    wait_text(browser, "#current-state", "version ")
    steps.shot("row-opens-aggregate")
    assert browser.execute_script("return window.__notReloaded === true"), "the page was reloaded"

    # No markup from data anywhere: not one <img> on the page, and no alert ever fired.
    assert browser.find_elements(By.TAG_NAME, "img") == []
    assert no_alert(browser)
    # No script error either (the network's expected 4xx answers, 401/404/409/422, are logged as such).
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE" and e["source"] != "network"]
    assert errors == [], errors
