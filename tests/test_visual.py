"""visual.py: the HTML report (rendered in headless Chromium) and the contact sheet."""

from __future__ import annotations

import json
import shutil
import subprocess
from html.parser import HTMLParser

import pytest
from PIL import Image
from typer.testing import CliRunner

import tiny_engine
from dupecheck.cli import app
from dupecheck.indexer import build_index
from helpers import LAYOUT_DIRS, jpeg_bytes, post, synthetic_photo, write_zip

TINY = tiny_engine.TINY
runner = CliRunner()
HOSTILE_CAPTION = ("<script>document.title='pwned'</script>"
                   "<img src=x onerror=\"document.title='pwned'\"> & café")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture
def checked(tmp_path, tiny_weights):
    meta = LAYOUT_DIRS["D"]
    files: dict[str, object] = {f"{meta}/posts_1.json": [
        post("media/posts/1/a.jpg", 1500000000, HOSTILE_CAPTION),
        post("media/posts/1/<b>.jpg", 1500000001, "plain")]}
    files["media/posts/1/a.jpg"] = jpeg_bytes(synthetic_photo(1))
    files["media/posts/1/<b>.jpg"] = jpeg_bytes(synthetic_photo(2))
    archive = write_zip(tmp_path / "export.zip", files)
    idx = tmp_path / "idx"
    build_index([archive], idx, TINY, tiny_weights)
    candidates = []
    for n, seed in enumerate((1, 3)):
        path = tmp_path / f"cand{n}.jpg"
        path.write_bytes(jpeg_bytes(synthetic_photo(seed)))
        candidates.append(path)
    html_path, sheet_path = tmp_path / "report.html", tmp_path / "sheet.png"
    result = runner.invoke(app, ["check", *map(str, candidates), "--index", str(idx), "-k", "2",
                                 "--report", str(html_path), "--sheet", str(sheet_path),
                                 "-t", "1.0", "--json"])
    assert result.exit_code == 1, result.output
    return html_path, sheet_path, json.loads(result.stdout)


class Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.text: list[str] = []
        self.scripts = 0
        self.title = ""
        self._in_title = False

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs).get("src", ""))
        if tag == "script":
            self.scripts += 1
        self._in_title = tag == "title"

    def handle_endtag(self, tag):
        self._in_title = False

    def handle_data(self, data):
        if self._in_title:
            self.title += data
        self.text.append(data)


def test_report_is_self_contained_and_escaped(checked):
    html_path, _, _ = checked
    page = Page()
    page.feed(html_path.read_text(encoding="utf-8"))
    assert page.scripts == 0
    assert len(page.images) == 2 * (1 + 2)  # each candidate and its two matches
    assert all(src.startswith("data:image/jpeg;base64,") for src in page.images)
    text = "".join(page.text)
    assert HOSTILE_CAPTION in text  # shown as text
    assert "media/posts/1/<b>.jpg" in text


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed "
                    "(.ci/run installs it)")
def test_report_renders_in_headless_chromium(checked, tmp_path):
    html_path, _, _ = checked
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'chromium'}"]
    dom = subprocess.run([CHROMIUM, *flags, "--dump-dom", html_path.as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    page = Page()
    page.feed(dom)
    assert page.title == "dupecheck report"  # no script ran: the title is not 'pwned'
    assert page.scripts == 0
    assert len(page.images) == 6
    assert HOSTILE_CAPTION in "".join(page.text)
    shot = tmp_path / "shot.png"
    subprocess.run([CHROMIUM, *flags, f"--screenshot={shot}", "--window-size=1200,900",
                    html_path.as_uri()], capture_output=True, timeout=120)
    with Image.open(shot) as img:
        colours = img.convert("RGB").resize((60, 45)).getcolors(60 * 45)
    assert colours is not None and len(colours) > 50  # thumbnails rendered, not a blank page


def test_contact_sheet(checked):
    _, sheet_path, doc = checked
    with Image.open(sheet_path) as sheet:
        assert sheet.format == "PNG"
        rows, columns = len(doc["results"]), 1 + 2
        assert sheet.width >= columns * 220 and sheet.height >= rows * 220
        # Each cell holds a photo, not blank paper.
        cell = sheet.crop((10, 10, 200, 150)).convert("L")
        assert cell.getextrema()[0] < 200
