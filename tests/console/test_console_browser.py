"""The console as people use it: headless Chromium (Debian's `chromium`, driven by Selenium
through Debian's `chromedriver`; nothing downloads a browser) signs in to the real
api-server of conftest.py, opens "Loyalty alerts" from Airflow's nav, sees the firing
store, adds a silence through the form, sees it listed and the next evaluation stay
quiet, opens the check's chart, and expires the silence.

Screenshots go to the test's temporary folder, or to docs/img with
LOYALTY_UPDATE_SCREENSHOTS=1 (`make screenshots`). Without a browser these tests skip,
saying how to get one.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
from pathlib import Path

import pytest

from loyalty_checks.catalog import catalog
from tests.conftest import ROOT
from tests.console.conftest import PASSWORDS
from tests.console.seed import CHECK, run_group, spike
from tests.sql.rows import MIN

pytestmark = pytest.mark.console

CHROMIUM = os.environ.get("LOYALTY_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("LOYALTY_CHROMEDRIVER", "/usr/bin/chromedriver")
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-dev-shm-usage", "--window-size=1440,1000", "--lang=en-US")
WAIT = 30  # seconds for any one thing to appear


def browser_missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not shutil.which(path):
            return (f"{path} not found: install Debian's Chromium and its driver with "
                    f"`apt-get install -y chromium chromium-driver` (or set LOYALTY_CHROMIUM / "
                    f"LOYALTY_CHROMEDRIVER); {package} is missing")
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "the selenium package is missing: `make test` installs requirements-dev.txt"
    return None


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    if os.environ.get("LOYALTY_UPDATE_SCREENSHOTS"):
        path = ROOT / "docs" / "img"
        path.mkdir(parents=True, exist_ok=True)
        return path
    return tmp_path_factory.mktemp("screenshots")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    reason = browser_missing()
    if reason:
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    log = tmp_path_factory.mktemp("chromedriver") / "chromedriver.log"
    service = Service(executable_path=CHROMEDRIVER, log_output=str(log))
    driver = webdriver.Chrome(service=service, options=options)
    try:
        driver.set_window_size(1440, 1000)
        yield driver
    finally:
        driver.quit()


def wait(driver, what: str, condition, timeout: float = WAIT):
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout).until(condition)
    except TimeoutException:
        raise AssertionError(f"timed out waiting for {what} at {driver.current_url}:\n"
                             f"{driver.page_source[:4000]}") from None


def css(driver, selector: str, what: str | None = None):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    return wait(driver, what or selector, ec.presence_of_element_located((By.CSS_SELECTOR, selector)))


def sign_in(driver, console, user: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(console.url + "/loyalty/")  # not signed in: the console sends us to Airflow's login
    wait(driver, "the console or Airflow's login", lambda d: d.find_elements(By.CSS_SELECTOR, "input[name=username]")
         or d.find_elements(By.CSS_SELECTOR, "main"))
    if driver.find_elements(By.CSS_SELECTOR, "main") and "/loyalty/" in driver.current_url:
        return  # signed in already (an earlier test)
    css(driver, "input[name=username]", "Airflow's login form").send_keys(user)
    driver.find_element(By.CSS_SELECTOR, "input[name=password]").send_keys(PASSWORDS[user])
    driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait(driver, "the console after signing in", lambda d: "/loyalty/" in d.current_url and
         d.find_elements(By.CSS_SELECTOR, "main"))


def open_from_nav(driver, console) -> None:
    """Airflow's home, then the nav entry "Loyalty alerts": the console in the UI's iframe."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    driver.get(console.url + "/")
    link = wait(driver, "the 'Loyalty alerts' entry in Airflow's nav",
                ec.element_to_be_clickable((By.CSS_SELECTOR, "a[aria-label='Loyalty alerts']")))
    link.click()
    wait(driver, "the plugin page", lambda d: "/plugin/loyalty-alerts" in d.current_url)
    frame = css(driver, "iframe", "the console's iframe")
    driver.switch_to.frame(frame)


def test_sign_in_see_silence_and_chart(console, pg, browser, dagbag, shots, monkeypatch):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    driver = browser
    sign_in(driver, console, "admin")
    open_from_nav(driver, console)

    # A firing store, its HTML name shown as text, in Airflow's UI.
    row = css(driver, f'tr.alert[data-check="{CHECK}"][data-entity="10"]', "the firing store 10")
    assert "<script>alert('x')</script> Burger & <b>Co</b>" in row.text
    assert "firing" in row.text and "trigger → slack" in row.text
    assert driver.execute_script("return window.__xss === undefined")
    driver.switch_to.default_content()
    driver.save_screenshot(str(shots / "console-alerts.png"))

    # Add a silence of the whole check through the form.
    driver.switch_to.frame(css(driver, "iframe"))
    driver.find_element(By.LINK_TEXT, "Silences").click()
    Select(css(driver, "select#check_id", "the silence form")).select_by_value(CHECK)
    duration = driver.find_element(By.ID, "duration")
    duration.clear()
    duration.send_keys("2h")
    driver.find_element(By.ID, "reason").send_keys("Rate limiter load test (browser)")
    driver.find_element(By.ID, "add").click()
    notice = css(driver, "#notice", "the added notice")
    assert notice.text.startswith("Silence #") and notice.text.endswith("added.")
    sid = notice.text.split("#")[1].split()[0]
    listed = css(driver, f'tr.silence-row[data-id="{sid}"]', "the new silence in the list")
    assert "Rate limiter load test (browser)" in listed.text and "admin" in listed.text
    assert "whole check" in listed.text
    driver.switch_to.default_content()
    driver.save_screenshot(str(shots / "console-silences.png"))

    # The next evaluation (stores 10 and 12 still spike, 11 starts) stays quiet: nothing reaches Slack.
    # After the silence began (rounded up: the silence may have started within this second), after the seed's T.
    t = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=1)).replace(microsecond=0)
    for k, v in console.conns.items():
        monkeypatch.setenv(k, v)
    with pg.connect(console.db_name, autocommit=True) as db:
        spike(db, 10, t - 30 * MIN, 150)
        spike(db, 12, t - 25 * MIN, 105)
        spike(db, 11, t - 20 * MIN, 130)  # new: would be announced without the silence
    console.sink.take("/")
    run_group(dagbag, t)
    assert console.sink.take("/slack") == []
    with console.client("viewer") as c:
        [latest] = c.get(f"/loyalty/api/checks/{CHECK}/history",
                         params={"since": (t - dt.timedelta(minutes=1)).isoformat()}).json()["evaluations"]
    assert latest["silenced"] is True and latest["status"] == "firing"

    # The alerts page shows store 11 firing, silenced; the check's chart.
    driver.switch_to.frame(css(driver, "iframe"))
    driver.find_element(By.LINK_TEXT, "Alerts now").click()
    store11 = css(driver, f'tr.alert[data-check="{CHECK}"][data-entity="11"]', "store 11 firing")
    assert "silenced" in store11.text
    driver.find_element(By.LINK_TEXT, "Rate limit spikes").click()
    css(driver, "svg#chart polyline.value", "the chart's value line")
    assert len(driver.find_elements(By.CSS_SELECTOR, "svg#chart .notification-mark")) >= 3
    assert driver.find_elements(By.CSS_SELECTOR, "svg#chart rect.silence-band")
    driver.switch_to.default_content()
    driver.save_screenshot(str(shots / "console-check.png"))

    # Expire it from the list.
    driver.switch_to.frame(css(driver, "iframe"))
    driver.find_element(By.LINK_TEXT, "Silences").click()
    css(driver, f'tr.silence-row[data-id="{sid}"] button[name=expire]').click()
    assert css(driver, "#notice").text == f"Silence #{sid} expired."
    assert not driver.find_elements(By.CSS_SELECTOR, f'tr.silence-row[data-id="{sid}"]')
    driver.switch_to.default_content()


def test_each_dag_has_an_alerts_tab_with_its_checks(console, browser, shots):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    driver = browser
    sign_in(driver, console, "admin")
    driver.get(console.url + "/dags/loyalty_p1_checks")
    tab = wait(driver, "the DAG's Alerts tab", ec.element_to_be_clickable(
        (By.XPATH, "//a[normalize-space()='Alerts' or @aria-label='Alerts']")))
    tab.click()
    wait(driver, "the Alerts tab's page", lambda d: "/plugin/loyalty-dag-alerts" in d.current_url)
    driver.switch_to.frame(css(driver, "iframe", "the console in the tab"))
    try:
        css(driver, f'tr.alert[data-check="{CHECK}"]', "a P1 alert")
        checks = {row.get_attribute("data-check") for row in driver.find_elements(By.CSS_SELECTOR, "#checks tr[data-check]")}
        p1 = {c.id for c in catalog().for_severity("P1")}
        assert checks == p1
        assert "Checks of the DAG loyalty_p1_checks only." in driver.find_element(By.TAG_NAME, "main").text
    finally:
        driver.switch_to.default_content()
    driver.save_screenshot(str(shots / "console-dag-tab.png"))


def test_airflow_ui_silences_form_and_dag_docs(console, browser):
    """The loyalty_silences trigger form groups the fields of each action and can be sent
    without a reason (list, expire); a check DAG's doc table fits its dialog."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    driver = browser
    sign_in(driver, console, "admin")
    driver.get(console.url + "/dags/loyalty_silences")
    wait(driver, "the Trigger button", ec.element_to_be_clickable(
        (By.XPATH, "//button[normalize-space()='Trigger']"))).click()
    wait(driver, "the form's sections", lambda d: all(
        d.find_elements(By.XPATH, f"//*[normalize-space()='{title}']")
        for title in ("To add a silence", "To expire a silence")))
    submit = driver.find_elements(By.XPATH, "//button[normalize-space()='Trigger']")[-1]
    assert submit.is_enabled()  # no required reason blocks list or expire
    driver.find_element(By.TAG_NAME, "body").send_keys("\ue00c")  # Escape

    driver.get(console.url + "/dags/loyalty_p1_checks")
    wait(driver, "the Dag Docs button", ec.element_to_be_clickable(
        (By.CSS_SELECTOR, "button[aria-label='Dag Docs']"))).click()
    table = css(driver, "[role=dialog] table", "the doc's check table")
    widths = driver.execute_script("""
        const table = arguments[0];
        let room = Infinity;  // the narrowest box around the table, up to the dialog
        for (let e = table.parentElement; e; e = e.parentElement) {
            if (e.clientWidth > 0) room = Math.min(room, e.clientWidth);
            if (e.getAttribute('role') === 'dialog') break;
        }
        return [table.getBoundingClientRect().width, room];""", table)
    assert widths[0] <= widths[1], widths  # the table fits: no horizontal scrolling to read it
    assert driver.find_elements(By.XPATH, "//*[@role='dialog']//a[normalize-space()='the alert console']")


def test_dark_mode_follows_the_system(console, browser, shots):
    """prefers-color-scheme: dark gives the dark palette (Airflow's own dark greys)."""
    driver = browser
    driver.execute_cdp_cmd("Emulation.setEmulatedMedia",
                           {"features": [{"name": "prefers-color-scheme", "value": "dark"}]})
    try:
        driver.get(console.url + f"/loyalty/checks/{CHECK}")
        css(driver, "svg#chart")
        driver.execute_script("localStorage.removeItem('theme'); location.reload()")
        css(driver, "svg#chart")
        background = driver.execute_script("return getComputedStyle(document.body).backgroundColor")
        assert background not in ("rgb(255, 255, 255)", "rgba(0, 0, 0, 0)"), background
        driver.save_screenshot(str(shots / "console-check-dark.png"))
    finally:
        driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})



def test_links_leave_the_iframe_and_long_reasons_wrap(console, browser, shots):
    """In the UI's iframe: an Airflow run link opens at the top (Airflow's own page, not
    Airflow inside the console), a runbook link in a new tab; an unbroken 900-character
    reason wraps instead of widening the page."""
    from selenium.webdriver.common.by import By

    driver = browser
    with console.client("admin") as api:
        added = api.post("/loyalty/api/silences", json={"check_id": CHECK, "entity_id": "12", "duration": "1h",
                                                        "reason": "x" * 900})
        assert added.status_code == 201, added.text
        sid = added.json()["id"]
    try:
        sign_in(driver, console, "admin")
        open_from_nav(driver, console)
        driver.find_element(By.LINK_TEXT, "Silences").click()
        cell = css(driver, f'tr.silence-row[data-id="{sid}"] td.reason', "the long reason")
        widths = driver.execute_script("""
            const cell = arguments[0], root = document.documentElement;
            return [cell.scrollWidth, cell.clientWidth, root.scrollWidth, root.clientWidth];""", cell)
        assert widths[0] <= widths[1] and widths[2] <= widths[3], widths
        driver.switch_to.default_content()
        driver.save_screenshot(str(shots / "console-long-reason.png"))

        driver.switch_to.frame(css(driver, "iframe"))
        driver.find_element(By.LINK_TEXT, "Alerts now").click()
        runbook = css(driver, f'tr.alert[data-check="{CHECK}"] a[target="_blank"]', "a runbook link")
        before = set(driver.window_handles)
        runbook.click()
        wait(driver, "the runbook in a new tab", lambda d: len(set(d.window_handles) - before) == 1)
        [tab] = set(driver.window_handles) - before
        driver.switch_to.window(tab)
        driver.close()
        driver.switch_to.window(before.pop())
        driver.switch_to.frame(css(driver, "iframe"))
        css(driver, f'tr.alert[data-check="{CHECK}"] a[target="_top"]', "an Airflow run link").click()
        driver.switch_to.default_content()
        wait(driver, "Airflow's run page at the top", lambda d: "/dags/loyalty_p1_checks/runs/" in d.current_url
             and "/plugin/" not in d.current_url)
    finally:
        driver.switch_to.default_content()
        with console.client("admin") as api:
            api.delete(f"/loyalty/api/silences/{sid}")


def test_an_expired_session_signs_in_again_and_comes_back(console, browser):
    """A page opened with an expired (here: forged) session goes through Airflow's login
    and back to that page, never to raw JSON."""
    from selenium.webdriver.common.by import By

    driver = browser
    driver.get(console.url + "/api/v2/monitor/health")
    driver.delete_all_cookies()
    driver.add_cookie({"name": "_token", "value": "e30.e30.expired", "path": "/"})
    driver.get(console.url + f"/loyalty/checks/{CHECK}?days=30")
    css(driver, "input[name=username]", "Airflow's login form").send_keys("viewer")
    driver.find_element(By.CSS_SELECTOR, "input[name=password]").send_keys(PASSWORDS["viewer"])
    driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait(driver, "the check page after signing in", lambda d: f"/loyalty/checks/{CHECK}" in d.current_url
         and d.find_elements(By.CSS_SELECTOR, "svg#chart"))
    assert "days=30" in driver.current_url
    assert not driver.find_element(By.TAG_NAME, "body").text.lstrip().startswith("{")
    # Signed in again as the viewer; the next test signs in as it needs.
    driver.delete_all_cookies()
