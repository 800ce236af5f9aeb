"""The phone page in a real browser: Debian's chromium driven by selenium through Debian's
chromium-driver, against `dupecheck serve`'s app on loopback (.ci/run installs both)."""

from __future__ import annotations

import contextlib
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


def _pair_with_the_worker_in_control(browser, wait, base: str, state) -> None:
    """Open the QR code's link (pairing) and wait until the service worker controls the
    page (a reload may be needed the first time)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    browser.get(f"{base}/#pair={state.pairing.code}")
    wait.until(ec.text_to_be_present_in_element((By.ID, "status"), "Paired as"))
    wait.until(lambda d: d.execute_script(
        "return navigator.serviceWorker.controller !== null") or d.refresh())


def test_the_installed_page_opens_when_the_computer_answers_503(server, browser):
    """Once installed, the page opens from the phone's copy when whatever answers at the
    computer's address says 503 (busy, or a proxy in front of a server that is down),
    not as the error."""
    import http.server
    import threading

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    base, state, *_ = server
    _pair_with_the_worker_in_control(browser, WebDriverWait(browser, 60), base, state)
    state.stop()

    class Busy(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            self.send_response(503)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"error": "too many requests at once"}')

        def log_message(self, *args) -> None:
            pass

    busy = http.server.HTTPServer(("127.0.0.1", int(base.rsplit(":", 1)[1])), Busy)
    threading.Thread(target=busy.serve_forever, daemon=True).start()
    try:
        browser.get(base + "/")
        assert browser.find_element(By.TAG_NAME, "h1").text == "Is it already on my Instagram?"
    finally:
        busy.shutdown()
        busy.server_close()


def test_the_page_installs_and_opens_with_the_computer_out_of_reach(server, browser):
    """A manifest and a service worker: once opened, the page opens again from the
    phone's copy when the server is gone, and says a check needs the computer."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    base, state, candidate, _ = server
    wait = WebDriverWait(browser, 60)
    _pair_with_the_worker_in_control(browser, wait, base, state)
    manifest = browser.execute_script(
        "return document.querySelector('link[rel=manifest]').href")
    assert manifest == f"{base}/manifest.webmanifest"
    for elsewhere in ("/", "/openapi.json", "/manifest.webmanifest"):  # each opened as a page
        browser.get(base + elsewhere)
    state.stop()
    browser.get(base + "/")  # no server: the service worker answers with the page alone
    assert browser.find_element(By.TAG_NAME, "h1").text == "Is it already on my Instagram?"
    browser.find_element(By.ID, "photo").send_keys(str(candidate))
    wait.until(ec.text_to_be_present_in_element((By.ID, "status"), "cannot be reached"))
    severe = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"
              and "ERR_CONNECTION_REFUSED" not in e["message"]
              and "Failed to fetch" not in e["message"]
              and "favicon.ico" not in e["message"]]  # asked for by the JSON opened as a page
    assert severe == []


@contextlib.contextmanager
def _index_served(tmp_path, weights, posted: dict[str, bytes], threshold: float | None,
                  model: str = "resnet50"):
    """The page over an index of `posted` (name -> bytes) made with `model` and `weights`
    (the ONNX engine); threshold None keeps the index's own. Yields (base URL, state, index
    folder, stop)."""
    from dupecheck.engines import get_model_spec
    from dupecheck.precision import engine_for

    folder = tmp_path / "export"
    folder.mkdir()
    for name, data in posted.items():
        (folder / name).write_bytes(data)
    idx = tmp_path / "idx"
    result = CliRunner().invoke(cli_app, ["index", str(folder), "--index", str(idx),
                                          "--model", model, "--weights", str(weights),
                                          "--engine", "onnx", "--quiet"])
    assert result.exit_code == 0, result.output
    index = open_index(idx)
    if threshold is not None:
        republish(index, {n: replace(e, threshold=threshold) for n, e in index.models.items()})
        index = open_index(idx)
    spec = get_model_spec(model)
    state = ServiceState(idx, spec, engine_for(index, spec, weights, "onnx"),
                         file_sha256(weights), TokenStore(tmp_path / "config"))
    state.pairing = Pairing.new()
    serving = served_on_loopback(create_app(state))
    port = serving.__enter__()
    done = []

    def stop() -> None:
        if not done:
            done.append(True)
            serving.__exit__(None, None, None)

    try:
        yield f"http://127.0.0.1:{port}", state, idx, stop
    finally:
        stop()


@pytest.fixture
def resnet_server(tmp_path, resnet50_weights):
    """The page over an index of 4 real photos made with ResNet-50 (random weights, the
    ONNX engine), 'similar' off as a calibrated 1.0 would be; stop() ends the server."""
    photos = sorted(PHOTOS.glob("jpg__*"))[:6]
    with _index_served(tmp_path, resnet50_weights,
                       {p.name: p.read_bytes() for p in photos[:4]}, 1.0) as served:
        base, state, idx, stop = served
        yield base, state, photos, idx, stop


def _as_blob(browser, path, call: str, options: dict | None = None):
    """Run `call` (a window.dupecheck.offline function taking a Blob) on a file's bytes."""
    import base64
    import json

    extra = f", {json.dumps(options)}" if options else ""
    return browser.execute_async_script(
        "const [data, name, done] = arguments;"
        "const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));"
        f"window.dupecheck.offline.{call}(new Blob([bytes], {{type: 'image/jpeg'}}), name{extra})"
        ".then(done, (e) => done({failed: String(e)}));",
        base64.b64encode(path.read_bytes()).decode(), path.name)


def _keep_a_copy(browser, base: str, state) -> dict:
    """Pair with the worker in control and keep a copy on the 'phone': save()'s answer."""
    from selenium.webdriver.support.ui import WebDriverWait

    browser.set_script_timeout(300)
    _pair_with_the_worker_in_control(browser, WebDriverWait(browser, 120), base, state)
    return browser.execute_async_script(
        "window.dupecheck.offline.save().then(arguments[0], "
        "(e) => arguments[0]({failed: String(e)}))")


def _phone_and_cli_see(browser, path, spec, engine):
    """(bits between the phone's PDQ hash and the CLI's, the phone's embedding, the
    CLI's) for one photo, full frame."""
    import numpy as np

    from dupecheck.evidence import pdq_distances, pdq_hash
    from dupecheck.imaging import decode

    image = decode(path.read_bytes(), path.name, draft=spec.draft_size).image
    bits = np.array(_as_blob(browser, path, "pdq"), np.uint8)
    apart = int(pdq_distances(pdq_hash(image)[None], bits)[0])
    phone = np.array(_as_blob(browser, path, "embedding"), np.float32)
    return apart, phone, engine.embed_batch(spec.to_input(image)[None])[0]


@pytest.mark.slow
def test_a_copy_kept_on_the_phone_checks_offline_as_the_cli_does(resnet_server, browser,
                                                                 tmp_path, resnet50_weights):
    """Paired, a copy kept, the server stopped, the page reloaded by its service worker:
    each photo's verdict equals the CLI's (exact, near-identical, new), its PDQ hash is
    within 8 bits of the CLI's, and the model's embedding agrees with the CLI's."""
    import json

    import numpy as np
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    from dupecheck.engines import get_model_spec, load_engine
    from dupecheck.imaging import decode
    from helpers import jpeg_bytes

    base, state, photos, idx, stop = resnet_server
    cases = [photos[0], photos[1], photos[4], photos[5]]  # posted as they are; never posted
    for n, src in enumerate(photos[2:4]):  # posted, re-encoded smaller
        img = decode(src.read_bytes(), src.name).image
        edited = tmp_path / f"reencoded-{n}.jpg"
        edited.write_bytes(jpeg_bytes(img.resize((img.width * 4 // 5, img.height * 4 // 5)),
                                      quality=80))
        cases.append(edited)
    wait = WebDriverWait(browser, 120)
    meta = _keep_a_copy(browser, base, state)
    assert meta.get("photos") == 4 and meta["bytes"] > 0, meta
    stop()
    browser.refresh()  # the computer is gone: the worker serves the page
    assert browser.execute_async_script(
        "window.dupecheck.offline.status().then(arguments[0])")["photos"] == 4
    cli = subprocess_check(cases, idx, resnet50_weights)
    mean = np.asarray(open_index(idx).embeddings("resnet50")).mean(axis=0)
    spec = get_model_spec("resnet50")
    engine = load_engine(spec, resnet50_weights, "onnx")
    for path in cases:
        offline = _as_blob(browser, path, "check")
        assert "failed" not in offline, offline
        assert offline["offline"] is True
        theirs = cli[path.name]
        assert offline["verdict"] == theirs["verdict"], (path.name, offline, theirs)
        # the same top row: by evidence, else by the embedding's ranking
        assert offline["matches"][0]["row"] == theirs["matches"][0]["row"], path.name
        apart, vector, ours = _phone_and_cli_see(browser, path, spec, engine)
        assert apart <= 8, path.name
        assert float(vector @ ours) >= 0.995, path.name
        # Random weights put every photo near every other (cosines ~0.99): measured from
        # the index's mean, the phone's input must still be the CLI's (Pillow's resize,
        # Python's rounding of the crop), not merely close.
        a, b = vector - mean, ours - mean
        assert float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)) >= 0.999, path.name
    assert json.dumps(cli)  # the CLI's document was complete
    # The page itself: a photo picked offline is checked on the phone and says so.
    browser.find_element(By.ID, "photo").send_keys(str(cases[0]))
    card = wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, ".result")))
    wait.until(lambda d: "offline" in card.text)
    assert "Already posted" in card.text and "Checked on this phone, offline" in card.text
    assert "MB); re-framed needs the computer" in card.text


@pytest.mark.slow
@pytest.mark.parametrize("model, weights_fixture", [
    ("resnet50", "resnet50_weights"), ("efficientnet-lite0", "lite0_weights")])
def test_the_phone_ranks_as_the_cli_over_the_test_photos_with_the_threshold_in_force(
        tmp_path, browser, request, monkeypatch, model, weights_fixture):
    """Every JPEG of the test set (Chromium decodes no HEIC), two in three posted as
    Instagram keeps them, the index's own threshold in force: the photos as taken, as
    posted, and re-edited. Offline, on the copy as the phone keeps it: every verdict the
    CLI's, and the same top-1 row for at least 99% of them; with 'similar' turned off
    (threshold 1.0), those found only similar are new on both; each photo's PDQ hash within
    8 bits of the CLI's, its embedding at a cosine >= 0.995. (A photo the CLI finds
    re-framed, by local features the phone has not, is 'similar' or 'new' there, and the
    result says re-framed was not used.) The copy keeps 8 principal directions for its 20
    rows, so that its int8 remainder counts, as in a large index (with 128 the 20 rows
    would be kept all but exactly).

    Twice: with ResNet-50's random weights every photo is 'similar' to every other, so the
    ranking below the evidence is all cosine, and rows the CLI itself scores within 1e-5 of
    each other are tied (its two engines agree to that; the phone decodes the JPEG with
    Chromium's decoder, not Pillow's); with EfficientNet-Lite0's trained weights the
    never-posted photos are new and the re-edits similar, a decision with real margins."""
    import random

    import dupecheck.offline
    from dupecheck.calibrate import reedit
    from dupecheck.engines import get_model_spec
    from dupecheck.imaging import decode

    weights = request.getfixturevalue(weights_fixture)
    spec = get_model_spec(model)
    components = 8
    monkeypatch.setattr(dupecheck.offline, "COMPONENTS", components)

    jpegs = sorted(PHOTOS.glob("jpg__*")) + sorted(PHOTOS.glob("*.JPG"))
    posted = [p for i, p in enumerate(jpegs) if i % 3 != 2]
    as_posted = {p.name: instagramify(p.read_bytes()) for p in posted}
    cases = list(jpegs)
    rng = random.Random(7)
    (tmp_path / "cases").mkdir()
    for n, path in enumerate(posted):  # half as posted, half re-edited
        if n % 2:
            case = tmp_path / "cases" / f"posted-{path.name}"
            case.write_bytes(as_posted[path.name])
        else:
            case = tmp_path / "cases" / f"reedited-{path.stem}.jpg"
            case.write_bytes(reedit(decode(path.read_bytes(), path.name).image,
                                    ("grade", "crop + grade")[n % 4 // 2], rng))
        cases.append(case)
    with _index_served(tmp_path, weights, as_posted, None, model) as served:
        base, state, idx, stop = served
        assert state.threshold(None) == spec.default_threshold  # the model's: embedding on
        meta = _keep_a_copy(browser, base, state)
        assert meta.get("photos") == len(posted), meta
        header = browser.execute_async_script(
            "window.dupecheck.offline.header().then(arguments[0])")
        assert header["embeddings_encoding"] == "int8-pca"
        assert header["components"] == min(components, len(posted))
        stop()
        cli = subprocess_check(cases, idx, weights, "--model", model)
        seen = {path.name: _as_blob(browser, path, "check") for path in cases}
        # 'similar' turned off (the CLI's --threshold 1.0): exact, near-identical and new
        similar = [p for p in cases if cli[p.name]["verdict"] == "similar"]
        cli_off = subprocess_check(similar, idx, weights, "--model", model,
                                   "--threshold", "1.0") if similar else {}
        off = {p.name: _as_blob(browser, p, "check", {"threshold": 1.0}) for p in similar}
    # random weights: re-edits are similar (so are the unrelated photos); trained ones find
    # them near-identical or re-framed, and the phone decides those by the cosine (below)
    assert len(similar) >= (5 if model == "resnet50" else 0) and not [
        (name, ours["verdict"], cli_off[name]["verdict"]) for name, ours in off.items()
        if ours["verdict"] != cli_off[name]["verdict"]
        and not (cli_off[name]["verdict"] == "re-framed" and ours["verdict"] == "new")]
    assert not similar or {r["verdict"] for r in cli_off.values()} >= {"new"}
    engine = load_engine(spec, weights, "onnx")
    for path in jpegs:  # per photo as taken, on the phone (the page still open offline)
        apart, phone, ours = _phone_and_cli_see(browser, path, spec, engine)
        assert apart <= 8 and float(phone @ ours) >= 0.995, path.name
    threshold = spec.default_threshold
    verdicts, wrong, other_top, reframed, by_cosine = {}, [], [], [], {}
    for name, offline in seen.items():
        theirs = cli[name]
        assert "failed" not in offline and offline["offline"] is True, offline
        assert offline["evidence_unavailable"] == ["re-framed"]
        verdicts[theirs["verdict"]] = verdicts.get(theirs["verdict"], 0) + 1
        if theirs["verdict"] == "re-framed":  # the computer's local features found it
            reframed.append(name)
            cosine = theirs["matches"][0]["score"]  # the phone has the cosine alone
            if abs(cosine - threshold) >= 0.01:  # clear of the phone's decoding noise
                by_cosine.setdefault(offline["verdict"], []).append(cosine)
            decided = "similar" if cosine >= threshold else "new"
            if offline["verdict"] != decided and (abs(cosine - threshold) >= 0.01 or offline[
                    "verdict"] not in ("similar", "new")):
                wrong.append((name, offline["verdict"], theirs["verdict"], cosine))
            continue
        if offline["verdict"] != theirs["verdict"]:
            wrong.append((name, offline["verdict"], theirs["verdict"]))
        cli_scores = {m["row"]: m["score"] for m in theirs["matches"]}
        top = offline["matches"][0]["row"]
        if cli_scores.get(top, -1.0) < theirs["matches"][0]["score"] - 1e-5:
            other_top.append((name, [(m["row"], m["score"]) for m in offline["matches"][:3]],
                              [(m["row"], m["score"]) for m in theirs["matches"][:3]]))
    assert not wrong, wrong
    expected = {"exact", "near-identical", "similar"}
    if model == "efficientnet-lite0":  # trained: a photo never posted is new, and the
        expected = {"exact", "near-identical", "re-framed", "new"}  # crops re-framed
        # the phone finds the re-framed crops similar by their cosine, or new below it
        assert len(by_cosine.get("similar", [])) >= 2 and by_cosine.get("new"), by_cosine
    assert set(verdicts) >= expected, verdicts
    ranked = len(seen) - len(reframed)
    assert ranked >= 0.8 * len(seen), (verdicts, reframed)
    assert len(other_top) <= 0.01 * ranked, (other_top, ranked)


def subprocess_check(paths, idx, weights, *options: str) -> dict:
    """The CLI's `check --json` document per photo, by file name."""
    import json

    result = CliRunner().invoke(cli_app, ["check", *map(str, paths), "--index", str(idx),
                                          "--weights", str(weights), "--engine", "onnx",
                                          "--json", "--top-k", "5", *options])
    assert result.exit_code in (0, 1), result.output
    return {r["photo"].rsplit("/", 1)[-1]: r for r in json.loads(result.stdout)["results"]}


def test_the_outbox_is_sent_once_when_the_page_opens_again_even_from_two_tabs(server, browser):
    """A photo left in the outbox (a page closed before the computer answered) is added
    when the page is next opened; two tabs opened at once send it once between them (the
    second finds it gone, or the computer answers 'already')."""
    import base64

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    base, state, _, never = server
    wait = WebDriverWait(browser, 60)
    browser.get(f"{base}/#pair={state.pairing.code}")
    wait.until(ec.text_to_be_present_in_element((By.ID, "status"), "Paired as"))
    browser.execute_async_script(
        "const [data, done] = arguments;"
        "const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));"
        "caches.open('dupecheck-outbox-v1').then((box) => box.put('/outbox/left', "
        "new Response(bytes, {headers: {'X-Name': 'left.jpg'}}))).then(() => done(true));",
        base64.b64encode(never.read_bytes()).decode())
    first = browser.current_window_handle
    browser.switch_to.new_window("tab")
    browser.get(f"{base}/")
    browser.switch_to.window(first)
    browser.refresh()
    wait.until(lambda d: len(open_index(state.index_dir)) == 3)
    time.sleep(1)
    assert len(open_index(state.index_dir)) == 3
    assert browser.execute_async_script(
        "caches.open('dupecheck-outbox-v1').then(c => c.keys()).then(k => arguments[0](k.length))"
    ) == 0


@pytest.mark.slow
def test_a_tampered_copy_naming_svg_thumbnails_gives_no_thumbnail(resnet_server, browser):
    """A copy whose header says its thumbnails are `svg+xml` (tampered with on the phone):
    no thumbnail is made of it, so nothing from the copy becomes a document that runs
    script in the service's origin; the real type still gives one."""
    from selenium.webdriver.support.ui import WebDriverWait

    base, state, *_ = resnet_server
    browser.set_script_timeout(120)
    _pair_with_the_worker_in_control(browser, WebDriverWait(browser, 60), base, state)
    saved = browser.execute_async_script("window.dupecheck.offline.save().then("
                                         "arguments[0], (e) => arguments[0]({failed: String(e)}))")
    assert "failed" not in saved, saved
    thumb = ("window.dupecheck.offline.header().then(() => "
             "arguments[0](window.dupecheck.offline.thumbnail(0)))")
    assert browser.execute_async_script(thumb).startswith("blob:")
    browser.execute_async_script("""
        const done = arguments[0];
        caches.open('dupecheck-offline-v1').then(async (cache) => {
          const buf = await (await cache.match('/offline/copy')).arrayBuffer();
          const magic = 18, length = new DataView(buf).getUint32(magic, true);
          const text = new TextDecoder().decode(new Uint8Array(buf, magic + 4, length));
          const header = JSON.parse(text);
          header.thumb_format = 'svg+xml';
          const json = new TextEncoder().encode(JSON.stringify(header));
          const out = new Uint8Array(magic + 4 + json.length + buf.byteLength - magic - 4 - length);
          out.set(new Uint8Array(buf, 0, magic));
          new DataView(out.buffer).setUint32(magic, json.length, true);
          out.set(json, magic + 4);
          out.set(new Uint8Array(buf, magic + 4 + length), magic + 4 + json.length);
          await cache.put('/offline/copy', new Response(out));
          done(true);
        });""")
    browser.refresh()
    assert browser.execute_async_script(thumb) is None


def test_posted_while_away_is_sent_once_the_computer_answers(server, browser):
    """'I posted it' with the computer out of reach waits in the outbox; the next time
    the page meets the computer it is added (and leaves the outbox)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    base, state, _, never = server
    wait = WebDriverWait(browser, 60)
    browser.get(f"{base}/#pair={state.pairing.code}")
    wait.until(ec.text_to_be_present_in_element((By.ID, "status"), "Paired as"))
    browser.find_element(By.ID, "photo").send_keys(str(never))
    wait.until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, ".verdict"), "Not posted"))
    # The computer goes away (requests to it fail), then "I posted it".
    browser.execute_cdp_cmd("Network.enable", {})
    browser.execute_cdp_cmd("Network.emulateNetworkConditions", {
        "offline": True, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1})
    browser.find_element(By.XPATH, "//button[text()='I posted it']").click()
    wait.until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, ".result button"),
                                                "when the computer is reached"))
    assert len(open_index(state.index_dir)) == 2  # not added yet
    browser.execute_cdp_cmd("Network.emulateNetworkConditions", {
        "offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1})
    # back online, the page sends it by itself (its 'online' handler), once
    wait.until(ec.text_to_be_present_in_element((By.ID, "status"), "posted while away"))
    assert len(open_index(state.index_dir)) == 3
    assert browser.execute_async_script(
        "caches.open('dupecheck-outbox-v1').then(c => c.keys()).then(k => arguments[0](k.length))"
    ) == 0
    browser.refresh()  # sent once: nothing left to send
    time.sleep(1)
    assert len(open_index(state.index_dir)) == 3
