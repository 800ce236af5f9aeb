"""The phone page in a real browser: Debian's chromium driven by selenium through Debian's
chromium-driver, against `dupecheck serve`'s app on loopback (.ci/run installs both)."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest
from typer.testing import CliRunner

import tiny_engine
from dupecheck.cli import app as cli_app
from dupecheck.engines import load_engine
from dupecheck.engines.weights import file_sha256
from dupecheck.service import Pairing, ServiceState, create_app
from dupecheck.store import open_index, republish
from dupecheck.tokens import TokenStore
from helpers import (
    LAYOUT_DIRS,
    PHOTOS,
    instagramify,
    jpeg_bytes,
    needs_chromium,
    post,
    served_on_loopback,
    synthetic_photo,
    write_tree,
)

TINY = tiny_engine.TINY
pytestmark = needs_chromium


@pytest.fixture
def server(tmp_path, tiny_weights):
    real = PHOTOS / "jpg__Canon_EOS_30D_(4).jpg"
    original = real.read_bytes()
    export = write_tree(tmp_path / "export", {
        f"{LAYOUT_DIRS['D']}/posts_1.json": [
            post("media/posts/1/posted.jpg", 1700000000, "Weekend walk <b>bold</b>"),
            post("media/posts/1/other.jpg", 1700100000, "other")],
        "media/posts/1/posted.jpg": instagramify(original),
        "media/posts/1/other.jpg": jpeg_bytes(synthetic_photo(4))})
    candidate = tmp_path / "IMG_0001.jpg"
    candidate.write_bytes(original)
    never = tmp_path / "never.jpg"
    never.write_bytes(jpeg_bytes(synthetic_photo(99)))
    idx = tmp_path / "idx"
    result = CliRunner().invoke(cli_app, ["index", str(export), "--index", str(idx),
                                          "--model", TINY.name, "--weights", str(tiny_weights)])
    assert result.exit_code == 0, result.output
    # The tiny test model's cosines mean little: `similar` off, as a calibrated 1.0 would.
    index = open_index(idx)
    republish(index, {n: replace(e, threshold=1.0) for n, e in index.models.items()})
    engine = load_engine(TINY, tiny_weights)
    state = ServiceState(idx, TINY, engine, file_sha256(tiny_weights),
                         TokenStore(tmp_path / "config"), {TINY.name: (TINY, lambda: engine)})
    state.pairing = Pairing.new()
    serving = served_on_loopback(create_app(state))
    port = serving.__enter__()
    stopped = []

    def stop() -> None:  # the computer goes out of reach
        if not stopped:
            stopped.append(True)
            serving.__exit__(None, None, None)

    state.stop = stop
    yield f"http://127.0.0.1:{port}", state, candidate, never
    stop()


def test_pair_by_link_then_check_a_photo_and_read_the_verdict(server, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    base, state, candidate, never = server
    wait = WebDriverWait(browser, 60)
    browser.get(f"{base}/#pair={state.pairing.code}")  # what the QR code holds
    wait.until(ec.text_to_be_present_in_element((By.ID, "status"), "Paired as"))
    assert "#pair" not in browser.current_url  # the code leaves the address bar
    assert state.pairing.used and len(state.tokens.list()) == 1
    browser.find_element(By.ID, "photo").send_keys(str(candidate))
    verdict = wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, ".verdict")))
    assert verdict.text.startswith("Already posted")
    card = browser.find_element(By.CSS_SELECTOR, ".result")
    assert "Posted on 2023-11-14 as a post" in card.text and "IMG_0001.jpg" in card.text
    assert "Weekend walk <b>bold</b>" in card.text  # markup shown as text
    wait.until(lambda d: d.execute_script(
        "return [...document.images].every(i => i.complete && i.naturalWidth > 0)"))
    # A photo never posted: "Not posted yet", and "I posted it" remembers it.
    browser.find_element(By.ID, "photo").send_keys(str(never))
    wait.until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, ".verdict"),
                                                "Not posted yet"))
    browser.find_element(By.XPATH, "//button[text()='I posted it']").click()
    wait.until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, ".result button"),
                                                "Remembered as posted"))
    severe = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert severe == []


def test_without_a_token_the_page_asks_to_pair(server, browser):
    from selenium.webdriver.common.by import By

    base, *_ = server
    browser.get(base + "/")
    time.sleep(0.5)
    assert browser.find_element(By.ID, "pairing").is_displayed()


def test_the_page_installs_and_opens_with_the_computer_out_of_reach(server, browser):
    """A manifest and a service worker: once opened, the page opens again from the
    phone's copy when the server is gone, and says a check needs the computer."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    base, state, candidate, _ = server
    wait = WebDriverWait(browser, 60)
    browser.get(f"{base}/#pair={state.pairing.code}")
    wait.until(ec.text_to_be_present_in_element((By.ID, "status"), "Paired as"))
    wait.until(lambda d: d.execute_script(
        "return navigator.serviceWorker.controller !== null") or d.refresh())
    manifest = browser.execute_script(
        "return document.querySelector('link[rel=manifest]').href")
    assert manifest == f"{base}/manifest.webmanifest"
    state.stop()
    browser.refresh()  # no server: the service worker answers
    assert browser.find_element(By.TAG_NAME, "h1").text == "Is it already on my Instagram?"
    browser.find_element(By.ID, "photo").send_keys(str(candidate))
    wait.until(ec.text_to_be_present_in_element((By.ID, "status"), "cannot be reached"))
    severe = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"
              and "ERR_CONNECTION_REFUSED" not in e["message"]
              and "Failed to fetch" not in e["message"]]
    assert severe == []
