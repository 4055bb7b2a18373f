"""The web page in headless Chromium (Debian's chromium + chromium-driver,
driven by Selenium): while a Concert register waits for its answer, the
cardholder presents a card and types the PIN on the page.  Screenshots go to
build/artifacts/browser/ (printed)."""
import os
import threading
import time

import pytest

from concert_client import exchange, odoo
from understudy import paths
from web_client import TOKEN
from wire import concert_tlv as tlv

CHROMIUM = "/usr/bin/chromium"
DRIVER = "/usr/bin/chromedriver"
ARTIFACTS = os.path.join(paths.ROOT, "build", "artifacts", "browser")

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium not installed (make setup)")
if not (os.path.exists(CHROMIUM) and os.path.exists(DRIVER)):
    pytest.skip("no %s or %s: tools/setup_browser.py (make test) installs chromium and chromium-driver "
                "with apt-get where it can" % (CHROMIUM, DRIVER), allow_module_level=True)

from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


@pytest.fixture
def browser(tmp_path):
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--window-size=412,1500", "--user-data-dir=%s" % (tmp_path / "chromium")):
        opts.add_argument(a)
    d = webdriver.Chrome(service=Service(executable_path=DRIVER), options=opts)
    try:
        yield d
    finally:
        d.quit()


def shot(d, name):
    os.makedirs(ARTIFACTS, exist_ok=True)
    path = os.path.join(ARTIFACTS, name + ".png")
    d.save_screenshot(path)
    print("screenshot:", path)
    return path


@pytest.mark.parametrize("fw_root", ["mpy"], indirect=True)  # what boards run; the page is gzipped there
def test_cardholder_pays_on_the_page(firmware, browser):
    fw = firmware({"web": {"token": TOKEN, "mode": "interactive"},
                   "timeouts": {"card_s": 30, "pin_s": 30}})
    host, port = fw.address("web")
    d = browser
    d.get("http://%s:%d/#token=%s" % (host, port, TOKEN))
    wait = WebDriverWait(d, 15, poll_frequency=0.1)

    def screen():
        return (d.find_element(By.ID, "l1").text, d.find_element(By.ID, "l2").text)

    wait.until(lambda _: d.find_element(By.ID, "conn").text == "live")
    assert screen() == ("WELCOME", "")
    assert d.find_element(By.ID, "mode").get_attribute("value") == "interactive"

    box = {}
    th = threading.Thread(target=lambda: box.update(a=exchange(fw.address("concert-ip"), odoo(4321),
                                                               timeout=40)), daemon=True)
    th.start()
    wait.until(lambda _: screen() == ("43.21 EUR", "PRESENT CARD"))
    shot(d, "1-present-card")
    d.find_element(By.CSS_SELECTOR, "#profile option[value=chip]").click()
    d.find_element(By.CSS_SELECTOR, "#brand option:nth-child(2)").click()  # VISA
    d.find_element(By.ID, "present").click()
    wait.until(lambda _: screen() == ("43.21 EUR", "ENTER PIN"))
    keys = {b.text: b for b in d.find_elements(By.CSS_SELECTOR, "#keys button") if b.text}
    for k in "1234":
        keys[k].click()
    assert d.find_element(By.ID, "pinshow").text == "****"
    shot(d, "2-pin")
    assert "a" not in box  # the register still waits
    d.find_element(By.ID, "ok").click()
    wait.until(lambda _: screen()[0] == "APPROVED")
    th.join(10)
    answer = tlv.decode(box["a"])
    assert answer["AE"] == "10" and answer["CB"].lstrip("0") == "4321"  # the register: approved
    assert screen() == ("APPROVED", "REMOVE CARD")
    # the journal, the receipt and the decoded trace follow
    wait.until(lambda _: "approved" in d.find_element(By.ID, "journal").text)
    row = d.find_element(By.CSS_SELECTOR, "#journal tbody tr").text
    assert "43.21 EUR" in row and "VISA chip" in row and "concert-ip" in row
    wait.until(lambda _: "43.21" in d.find_element(By.ID, "receipt").text)
    trace = d.find_element(By.ID, "trace").text
    assert "concert-ip request" in trace and "amount CB: 4321" in trace, trace
    assert "concert-ip answer" in trace and "status AE: 10 done" in trace, trace
    shot(d, "3-approved")
    d.find_element(By.ID, "remove").click()
    wait.until(lambda _: screen() == ("WELCOME", ""))
    time.sleep(0.2)
    d.set_window_size(1200, 900)
    shot(d, "4-desktop")


@pytest.mark.parametrize("fw_root", ["mpy"], indirect=True)
def test_the_page_says_when_a_panel_could_not_load(firmware, browser):
    """The terminal gone (or too short of memory to answer): the page says
    so, in its message line and in the journal panel, and tries again."""
    fw = firmware({"web": {"token": TOKEN}})
    host, port = fw.address("web")
    d = browser
    d.get("http://%s:%d/#token=%s" % (host, port, TOKEN))
    wait = WebDriverWait(d, 15, poll_frequency=0.1)
    wait.until(lambda d: d.find_element(By.ID, "l1").text)  # the page drew the screen
    fw.kill()
    d.execute_script("journal()")
    wait.until(lambda d: "could not load" in d.find_element(By.ID, "journal").text)
    assert "no answer from the terminal" in d.find_element(By.ID, "msg").text
    shot(d, "panel-could-not-load")
