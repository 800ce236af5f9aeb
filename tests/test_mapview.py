"""`dupecheck map`: the page in a real browser, the PNG, the JSON, the thumbnail cache."""

from __future__ import annotations

import json
import shutil
import time

import pytest
from PIL import Image

from dupecheck.mapview import THUMB_CACHED
from dupecheck.thumbs import thumbs_dir
from helpers import LAYOUT_DIRS, jpeg_bytes, needs_chromium, post, synthetic_photo, write_tree

MARKUP = "<img src=x onerror=\"document.title='pwned'\"><b>bold</b></script>&amp;"


@pytest.fixture
def mapped(tmp_path, tiny_weights, cli):
    """An export of 14 posts (two posted twice), one caption full of markup, indexed."""
    meta = LAYOUT_DIRS["D"]
    posts, files = [], {}
    for s in range(12):
        name = f"media/posts/2024{s % 3}/{s}.jpg"
        posts.append(post(name, 1500000000 + s * 40_000_000,
                          MARKUP if s == 3 else f"caption {s}"))
        files[name] = jpeg_bytes(synthetic_photo(s, (480, 360)))
    for s in (0, 1):  # posted again
        name = f"media/posts/again/{s}.jpg"
        posts.append(post(name, 1700000000 + s, "again"))
        files[name] = files[f"media/posts/2024{s % 3}/{s}.jpg"]
    files[f"{meta}/posts_1.json"] = posts
    export = write_tree(tmp_path / "export", files)
    idx = tmp_path / "idx"
    cli("index", export, "--index", idx, "--model", "tiny-test", "--weights", tiny_weights)
    return idx


def run_map(cli, idx, tmp_path, *extra, code=0):
    return cli("map", "--index", idx, "--out", tmp_path / "map.html", "--png",
               tmp_path / "map.png", *extra, code=code)


def test_json_has_one_point_per_photo_and_motifs_that_cover_them(cli, mapped, tmp_path):
    doc = json.loads(run_map(cli, mapped, tmp_path, "--json", "--motifs", "3").stdout)
    assert doc["model"] == "tiny-test"
    assert [p["row"] for p in doc["points"]] == list(range(14))
    for p in doc["points"]:
        assert set(p) >= {"row", "x", "y", "motif", "path", "taken_at", "kind"}
        assert 0 <= p["x"] <= 1 and 0 <= p["y"] <= 1 and p["kind"] == "post"
    rows = sorted(r for m in doc["motifs"] for r in m["photos"])
    assert rows == list(range(14))
    for m in doc["motifs"]:
        assert set(m) >= {"id", "name", "count", "photos"} and m["count"] == len(m["photos"])
        assert all(doc["points"][r]["motif"] == m["id"] for r in m["photos"])
    assert len([m for m in doc["motifs"] if m["name"] != "other"]) == 3
    # The two photos posted twice are linked (exact copies: dupes finds them).
    groups = sorted(sorted(doc["points"][r]["path"] for r in g) for g in doc["duplicate_groups"])
    assert groups == [["media/posts/20240/0.jpg", "media/posts/again/0.jpg"],
                      ["media/posts/20241/1.jpg", "media/posts/again/1.jpg"]]


def test_the_png_is_a_real_image_1600_px_wide(cli, mapped, tmp_path):
    run_map(cli, mapped, tmp_path, "--quiet")
    with Image.open(tmp_path / "map.png") as img:
        img.load()
        assert img.format == "PNG" and img.width == 1600 and img.height > 1600
        colours = img.convert("RGB").resize((64, 64)).getcolors(64 * 64)
        assert colours is not None and len(colours) > 20  # thumbnails drawn, not a blank page


def test_terminal_summary_says_where_the_files_are(cli, mapped, tmp_path):
    out = run_map(cli, mapped, tmp_path, "--motifs", "2").stdout
    assert "14 photos in" in out and str(tmp_path / "map.html") in out.replace("\n", "")
    assert "numbered" in out  # the tiny test model has no words: motifs are numbered


def test_bad_motif_count_or_missing_folder_is_a_usage_error(cli, mapped, tmp_path):
    result = run_map(cli, mapped, tmp_path, "--motifs", "lots", code=2)
    assert "--motifs" in result.output
    result = cli("map", "--index", mapped, "--out", tmp_path / "no" / "map.html", code=2)
    assert "folder does not exist" in result.output


def test_thumbnails_are_made_once_and_a_damaged_one_is_made_again(cli, mapped, tmp_path):
    shutil.rmtree(thumbs_dir(), ignore_errors=True)  # other tests share the test cache
    run_map(cli, mapped, tmp_path, "--quiet")
    cached = sorted((thumbs_dir() / str(THUMB_CACHED)).rglob("*.jpg"))
    assert len(cached) == 12  # 14 rows, 12 distinct photos: keyed by content
    stamps = {p: p.stat().st_mtime_ns for p in cached}
    cached[0].write_bytes(b"not a jpeg")
    time.sleep(0.01)
    run_map(cli, mapped, tmp_path, "--quiet")
    assert Image.open(cached[0]).format == "JPEG"  # remade
    assert all(p.stat().st_mtime_ns == stamps[p] for p in cached[1:])  # the rest reused


def test_a_moved_archive_still_maps_with_dots(cli, mapped, tmp_path):
    shutil.rmtree(tmp_path / "export")
    shutil.rmtree(thumbs_dir(), ignore_errors=True)
    result = run_map(cli, mapped, tmp_path)
    assert "14 of 14 photos have no thumbnail" in result.stderr.replace("\n", " ")
    assert (tmp_path / "map.html").stat().st_size > 0


@needs_chromium
def test_page_opens_in_chromium_shows_every_photo_and_captions_as_text(cli, mapped, tmp_path,
                                                                       browser):
    run_map(cli, mapped, tmp_path, "--quiet", "--motifs", "3")
    page = (tmp_path / "map.html").read_text()
    assert "http://" not in page and "https://" not in page  # self-contained: no CDN
    import re

    [csp] = re.findall(r'http-equiv="Content-Security-Policy" content="([^"]*)"', page)
    policy = dict(part.strip().split(" ", 1) for part in csp.split(";"))
    assert policy["default-src"] == "'none'" and policy["img-src"] == "data:", csp
    assert set(policy) <= {"default-src", "img-src", "style-src", "script-src"}, csp
    browser.set_window_size(1200, 900)
    browser.get((tmp_path / "map.html").as_uri())
    state = browser.execute_script("return window.dupecheckMap")
    assert state["points"] == 14
    canvas = browser.find_element("id", "map")
    assert canvas.get_attribute("data-drawn") == "14"
    legend = browser.find_elements("css selector", "#legend li")
    assert sum(int(li.find_element("css selector", ".count").text) for li in legend) == 14
    assert browser.find_elements("css selector", "#years tr")  # posted-per-year strip
    # The caption with markup shows as text, and nothing in it ran.
    shown = browser.execute_script("return window.dupecheckMap.show(3)")
    assert "<b>bold</b>" in shown and "</script>" in shown
    tip = browser.find_element("id", "tip")
    assert tip.find_elements("css selector", "b img, img") == []
    assert browser.title == "dupecheck map"
    # Hovering a photo shows its date, kind and caption.
    x, y = browser.execute_script("return window.dupecheckMap.screenOf(5)")
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(browser).move_to_element_with_offset(canvas, 0, 0).perform()
    rect = canvas.rect
    ActionChains(browser).move_to_element_with_offset(
        canvas, int(x - rect["width"] / 2), int(y - rect["height"] / 2)).perform()
    assert tip.is_displayed() and "caption 5" in tip.text and "post" in tip.text
    # Zooming in turns dots into thumbnails.
    before = browser.execute_script("return window.dupecheckMap.state.scale")
    for _ in range(4):
        browser.find_element("id", "zin").click()
    after = browser.execute_script("return window.dupecheckMap.state")
    assert after["scale"] > before and after["drawn"] == 14 and after["dots"] < 14
    # On a phone's width the map keeps the screen's width, the legend goes below it.
    browser.set_window_size(420, 900)
    browser.execute_script("window.dispatchEvent(new Event('resize'))")
    assert canvas.rect["width"] >= 380 and canvas.rect["height"] >= 300
    assert browser.find_element("css selector", "aside").rect["y"] > canvas.rect["y"]
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == []


def test_reframed_re_edits_are_joined_with_the_reframed_pass(cli, tmp_path, real_photos,
                                                             tiny_weights):
    """A re-edit cropped off-centre is found by local features only: a small archive's
    map joins it (dupes' re-framed pass runs by default up to 2,000 photos), and
    `--no-reframed` leaves it out."""
    names = ("jpg__Canon_EOS_30D_(4).jpg", "jpg__Nikon_D100.jpg", "jpg__Kodak_DX6490.jpg")
    originals = [Image.open(real_photos / n).convert("RGB") for n in names]
    w, h = originals[0].size
    crop = originals[0].crop((int(w * 0.25), int(h * 0.05), int(w * 0.95), int(h * 0.8)))
    files = {f"media/posts/1/{i}.jpg": jpeg_bytes(img) for i, img in enumerate(originals)}
    files["media/posts/2/crop.jpg"] = jpeg_bytes(crop)
    files[f"{LAYOUT_DIRS['D']}/posts_1.json"] = [post(n, 1600000000 + i, "c")
                                                 for i, n in enumerate(files)]
    export = write_tree(tmp_path / "export", files)
    idx = tmp_path / "idx"
    cli("index", export, "--index", idx, "--model", "tiny-test", "--weights", tiny_weights)
    plain = json.loads(run_map(cli, idx, tmp_path, "--json", "-t", "1.0",
                               "--no-reframed").stdout)
    assert plain["duplicate_groups"] == [] and not plain["reframed_joined"]
    doc = json.loads(run_map(cli, idx, tmp_path, "--json", "-t", "1.0").stdout)
    assert doc["reframed_joined"]
    assert [sorted(doc["points"][r]["path"] for r in g) for g in doc["duplicate_groups"]] == \
        [["media/posts/1/0.jpg", "media/posts/2/crop.jpg"]]
