"""Hostile and broken inputs: one clear line each, no traceback, the rest indexed,
the right exit code, and nothing read or written outside the archive and the index."""

from __future__ import annotations

import json
import os
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from dupecheck.cli import app
from helpers import encode, jpeg_bytes, png_declaring, post, synthetic_photo, write_zip

runner = CliRunner()
GOOD = 3  # good photos in every hostile archive


def bad_images() -> dict[str, bytes]:
    """name -> bytes for every broken or odd image; names themselves are hostile too."""
    from pillow_heif import register_heif_opener

    register_heif_opener()
    photo = synthetic_photo(40, (320, 240))
    big_exif = Image.Exif()
    big_exif[0x010E] = "x" * 60000  # ImageDescription: a huge EXIF block
    exif0, exif9 = Image.Exif(), Image.Exif()
    exif0[0x0112], exif9[0x0112] = 0, 9
    ramp16 = Image.fromarray(np.arange(64, dtype=np.uint16)[None, :].repeat(8, 0) * 1000)
    pal = Image.new("P", (30, 30), 1)
    pal.putpalette([0, 0, 0, 200, 10, 10] + [0] * 762)
    return {
        "broken/zero bytes.jpg": b"",
        "broken/truncated.jpg": jpeg_bytes(photo)[:400],
        "broken/truncated.png": encode(photo, "PNG")[:300],
        "broken/truncated.webp": encode(photo, "WEBP")[:200],
        "broken/truncated.heic": encode(photo, "HEIF")[:300],
        "broken/random bytes.jpg": bytes(np.random.default_rng(0).integers(0, 256, 5000,
                                                                            dtype=np.uint8)),
        "broken/bomb 40000x40000.png": png_declaring(40000, 40000),
        "odd/orientation-0.jpg": jpeg_bytes(photo, exif=exif0),
        "odd/orientation-9.jpg": jpeg_bytes(photo, exif=exif9),
        "odd/huge-exif.jpg": jpeg_bytes(photo, exif=big_exif),
        "odd/animated.webp": encode(photo, "WEBP", save_all=True,
                                    append_images=[synthetic_photo(41, (320, 240))]),
        "odd/animated.gif": encode(photo, "GIF", save_all=True,
                                   append_images=[synthetic_photo(42, (320, 240))]),
        "odd/cmyk.jpg": jpeg_bytes(photo.convert("CMYK")),
        "odd/16-bit.png": encode(ramp16, "PNG"),
        "odd/palette-transparent.png": encode(pal, "PNG", transparency=0),
        "odd/1x1.png": encode(Image.new("RGB", (1, 1), (9, 9, 9)), "PNG"),
        "odd/10000x10.png": encode(Image.new("RGB", (10000, 10), (9, 90, 9)), "PNG"),
        "odd/name with spaces 🥰 émoji.jpg": jpeg_bytes(synthetic_photo(43)),
    }


BROKEN = 7  # the entries under broken/ above
ODD = 11  # the entries under odd/: they all decode


def good_files() -> dict[str, bytes]:
    return {f"good/{n}.jpg": jpeg_bytes(synthetic_photo(100 + n)) for n in range(GOOD)}


class FileAudit:
    """Records every path Python opens while active (sys.addaudithook cannot be removed)."""

    active = False
    opened: list[str] = []
    installed = False

    @classmethod
    def install(cls) -> None:
        if cls.installed:
            return

        def hook(event: str, args: tuple) -> None:
            if cls.active and event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
                path = os.fsdecode(args[0]) if not isinstance(args[0], str) else args[0]
                if not os.path.isabs(path) and os.sep not in path:
                    return  # relative to a dir_fd (shutil.rmtree's walk), not to the cwd
                mode = args[1] if len(args) > 1 and isinstance(args[1], str) else None
                if mode is None:  # os.open: the flags say whether it writes
                    flags = args[2] if len(args) > 2 and isinstance(args[2], int) else 0
                    writes = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
                    mode = "w" if flags & writes else "r"
                cls.opened.append(f"{mode}:{os.path.abspath(path)}")

        sys.addaudithook(hook)
        cls.installed = True


def allowed(entry: str, roots: list[Path]) -> bool:
    """Writes only under the roots (the index, dupecheck's cache); reads also of the
    system's files (Python's own modules, shared libraries, /proc)."""
    import dupecheck

    mode, path = entry.split(":", 1)
    if any(path.startswith(str(r)) for r in roots):
        return True
    if any(c in mode for c in "wax+"):
        return False
    code = str(Path(dupecheck.__file__).parent)  # lazy imports of dupecheck's own modules
    system = [sys.prefix, sys.base_prefix, "/usr/", "/etc/", "/proc/", "/sys/", "/dev/",
              "/lib", "/opt/", code]
    return any(path.startswith(s) for s in system)


def test_the_file_audit_catches_a_write_outside_the_roots(tmp_path):
    assert not allowed("w:/etc/dupecheck-test", [tmp_path])
    assert not allowed("a:/usr/lib/x", [tmp_path])
    assert allowed("r:/usr/lib/x", [tmp_path]) and allowed(f"w:{tmp_path}/x", [tmp_path])
    FileAudit.install()
    FileAudit.opened, FileAudit.active = [], True
    try:
        fd = os.open(tmp_path / "flags.bin", os.O_WRONLY | os.O_CREAT)
        os.close(fd)
    finally:
        FileAudit.active = False
    assert f"w:{tmp_path / 'flags.bin'}" in FileAudit.opened


@pytest.fixture
def hostile_folder(tmp_path) -> Path:
    root = tmp_path / "archive"
    for name, data in {**bad_images(), **good_files()}.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    # A name that is not UTF-8 at all.
    (root / os.fsdecode(b"odd/latin1-\xe9t\xe9.jpg")).write_bytes(jpeg_bytes(synthetic_photo(44)))
    return root


def run_index(archives: list[Path], index: Path, weights: Path, audit_roots: list[Path]):
    FileAudit.install()
    FileAudit.opened = []
    FileAudit.active = True
    try:
        result = runner.invoke(app, ["index", *map(str, archives), "--index", str(index),
                                     "--model", "tiny-test", "--weights", str(weights), "--json"])
    finally:
        FileAudit.active = False
    outside = [p for p in FileAudit.opened if not allowed(p, audit_roots)]
    return result, outside


def skipped_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("skipped:")]


def test_hostile_images_in_a_folder(hostile_folder, tiny_weights, tmp_path):
    index = tmp_path / "index"
    roots = [hostile_folder, index, tiny_weights, Path(os.environ["XDG_CACHE_HOME"])]
    result, outside = run_index([hostile_folder], index, tiny_weights, roots)
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    assert outside == []
    doc = json.loads(result.stdout)
    assert doc["photos"] == GOOD + ODD + 1  # the latin-1 name decodes too
    lines = skipped_lines(result.stderr)
    assert len(lines) == BROKEN, lines
    for name in [n for n in bad_images() if n.startswith("broken/")]:
        assert sum(name in line for line in lines) == 1, name  # one line each, naming the file
    bomb = next(line for line in lines if "bomb" in line)
    assert "limit" in bomb or "bomb" in bomb.split(":", 2)[2]


def test_hostile_candidates_exit_2_one_line_each(hostile_folder, tiny_weights, tmp_path):
    index = tmp_path / "index"
    assert runner.invoke(app, ["index", str(hostile_folder / "good"), "--index", str(index),
                               "--model", "tiny-test", "--weights", str(tiny_weights)]
                         ).exit_code == 0
    broken = sorted((hostile_folder / "broken").iterdir())
    result = runner.invoke(app, ["check", *map(str, broken), str(hostile_folder / "good/0.jpg"),
                                 "--index", str(index), "--json"])
    assert result.exit_code == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == len(broken)
    assert "Traceback" not in result.output
    verdicts = [r["verdict"] for r in json.loads(result.stdout)["results"]]
    assert verdicts == [None] * len(broken) + ["exact"]


def hostile_json_export(tmp_path: Path) -> Path:
    meta = "your_instagram_activity/media"
    deep = "[" * 100_000 + "]" * 100_000  # nesting json.loads cannot follow
    files = {
        f"{meta}/posts_1.json": [post("media/posts/1/good0.jpg", 1, "x" * 10_000_000),
                                 post("../../outside.jpg", 2), post("/etc/passwd", 3),
                                 post("https://example.com/a.jpg?x=1", 4),
                                 {"media": "media/posts/1/good1.jpg"},
                                 {"media": [{"uri": "media/posts/1/good1.jpg",
                                             "creation_timestamp": "yesterday"}]},
                                 {"media": [{"uri": "media/posts/1/good2.jpg",
                                             "creation_timestamp": -1}]},
                                 {"no_media_key": True}],
        f"{meta}/stories.json": "{this is not json",
        f"{meta}/reels.json": deep,
        f"{meta}/archived_posts.json": {"ig_archived_post_media": "a string"},
        "media/posts/1/good0.jpg": jpeg_bytes(synthetic_photo(1)),
        "media/posts/1/good1.jpg": jpeg_bytes(synthetic_photo(2)),
        "media/posts/1/good2.jpg": jpeg_bytes(synthetic_photo(3)),
    }
    root = tmp_path / "json-export"
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else
                         (content if isinstance(content, str) else json.dumps(content)).encode())
    return root


def test_hostile_json(tmp_path, tiny_weights):
    (tmp_path / "outside.jpg").write_bytes(jpeg_bytes(synthetic_photo(9)))
    src = hostile_json_export(tmp_path)
    index = tmp_path / "index"
    roots = [src, index, tiny_weights, Path(os.environ["XDG_CACHE_HOME"])]
    result, outside = run_index([src], index, tiny_weights, roots)
    assert result.exit_code == 0, result.output
    assert outside == [] and "Traceback" not in result.output
    doc = json.loads(result.stdout)
    assert doc["photos"] == 3
    assert len(doc["missing"]) == 3  # ../../outside.jpg, /etc/passwd, the URL
    text = "\n".join(doc["errors"])
    for expected in ("stories.json: invalid JSON", "reels.json: invalid JSON",
                     "archived_posts.json: expected a list", "'media' is not a list",
                     "creation_timestamp is not a Unix time", "no 'media' or 'uri'"):
        assert expected in text, expected


@pytest.mark.filterwarnings("ignore:Duplicate name")
def test_hostile_zips(tmp_path, tiny_weights, photo_bytes, monkeypatch):
    good = {f"media/posts/1/{n}.jpg": photo_bytes(n) for n in range(GOOD)}
    (tmp_path / "z" / "y" / "x").mkdir(parents=True)
    evil = tmp_path / "z" / "y" / "x" / "evil.zip"
    work = tmp_path / "c" / "b" / "a"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)  # where `../../escaped.jpg` would land if extracted here
    with zipfile.ZipFile(evil, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in good.items():
            zf.writestr(name, data)
        zf.writestr("../../escaped.jpg", photo_bytes(10))
        zf.writestr("/etc/x.jpg", photo_bytes(11))
        link = zipfile.ZipInfo("media/posts/1/link.jpg")
        link.external_attr = 0o120777 << 16
        zf.writestr(link, "/etc/passwd")
        zf.writestr("media/posts/1/0.jpg", photo_bytes(12))  # a duplicate name
        with zf.open("media/posts/1/bomb.jpg", "w", force_zip64=True) as fh:
            fh.write(b"\xff\xd8\xff\xe0")
            zeros = b"\x00" * (1 << 24)
            for _ in range(17):  # 272 MB of zeros: a few hundred KB compressed
                fh.write(zeros)
    # zipfile cannot write encryption: mark a member encrypted by its flag bit, as real
    # encrypted zips do, in both its local header and its central directory entry.
    encrypted = write_zip(tmp_path / "encrypted.zip", {"media/posts/1/encrypted.jpg":
                                                       photo_bytes(13)})
    raw = bytearray(encrypted.read_bytes())
    raw[6] |= 0x1
    central = raw.index(b"PK\x01\x02")
    raw[central + 8] |= 0x1
    encrypted.write_bytes(bytes(raw))
    truncated = tmp_path / "truncated.zip"
    truncated.write_bytes(write_zip(tmp_path / "t.zip", good).read_bytes()[:500])
    notzip = tmp_path / "not-a-zip.zip"
    notzip.write_bytes(b"GIF89a not a zip")
    assert evil.stat().st_size < 2_000_000
    index = tmp_path / "index"
    roots = [evil, encrypted, truncated, notzip, tmp_path / "t.zip", index, tiny_weights,
             Path(os.environ["XDG_CACHE_HOME"])]
    result, outside = run_index([evil, encrypted, truncated, notzip], index, tiny_weights,
                                roots)
    assert result.exit_code == 0, result.output
    assert outside == [] and "Traceback" not in result.output
    # Where the escaping members point, from the working directory, the zip's folder and
    # the index: nothing there.
    baits = [(base / "../../escaped.jpg").resolve() for base in (work, evil.parent, index)]
    assert baits[0] == tmp_path / "c" / "escaped.jpg" and baits[1] == tmp_path / "z" / \
        "escaped.jpg"
    assert not any(b.exists() for b in baits) and not Path("/etc/x.jpg").exists()
    assert not list(tmp_path.glob("**/escaped.jpg"))
    doc = json.loads(result.stdout)
    assert doc["photos"] == GOOD, (doc["errors"], doc["orphans"])
    text = "\n".join(doc["errors"])
    for expected in ("../../escaped.jpg: member name escapes", "/etc/x.jpg: member name escapes",
                     "link.jpg: symbolic link member", "0.jpg: duplicate name",
                     "encrypted.jpg: encrypted member", "bomb.jpg:",
                     "truncated.zip: unreadable zip", "not-a-zip.zip: not a zip file"):
        assert expected in text, expected
    assert "over the" in next(line for line in doc["errors"] if "bomb.jpg" in line)


def test_no_readable_archive_exits_2(tmp_path, tiny_weights):
    notzip = tmp_path / "x.zip"
    notzip.write_bytes(b"nope")
    result = runner.invoke(app, ["index", str(notzip), "--index", str(tmp_path / "i"),
                                 "--model", "tiny-test", "--weights", str(tiny_weights)])
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and "x.zip: not a zip file" in result.stderr
