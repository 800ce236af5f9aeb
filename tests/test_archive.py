"""archive.py: every layout A-D, zips and folders, and the quirks of real exports."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dupecheck.archive import (
    KIND_ARCHIVED,
    KIND_DELETED,
    KIND_PHOTO,
    KIND_POST,
    KIND_PROFILE,
    KIND_REEL,
    KIND_STORY,
    KIND_UNLISTED,
    Archive,
    repair_mojibake,
    safe_member_name,
    scan_archive,
)
from dupecheck.errors import ArchiveError
from helpers import LAYOUT_DIRS, mojibake, post, write_tree, write_zip

MP4 = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + b"\x00" * 64


def by_path(scan):
    return {p.path: p for p in scan.photos}


def full_export(layout: str, jpeg) -> dict[str, object]:
    """A export with every kind of file, in layout B, C or D."""
    meta = LAYOUT_DIRS[layout]
    return {
        f"{meta}/posts_1.json": [
            post("media/posts/202408/single.jpg", 1722801156,
                 mojibake("A rainy day lunch 🥰 #sub")),
            post(["media/posts/201703/c0.jpg", "media/posts/201703/c1.mp4",
                  "media/posts/201703/c2.webp"], 1489153257, "Weekend in Lisbon"),
            post("media/posts/202001/missing.jpg", 1577836800, "gone"),
            post("https://cdn.example/v/t51.jpg?stp=dst-jpg", 1577836801, "remote"),
        ],
        f"{meta}/stories.json": {"ig_stories": [
            {"uri": "media/stories/202101/s.jpg", "creation_timestamp": 1610000000,
             "title": ""}]},
        f"{meta}/reels.json": {"ig_reels_media": [
            {"media": [{"uri": "media/reels/r.mp4", "creation_timestamp": 1620000000,
                        "title": "reel", "media_metadata": {"video_metadata": {
                            "subtitles": {"uri": "media/reels/r.srt"}}}}]}]},
        f"{meta}/archived_posts.json": {"ig_archived_post_media": [
            post("media/archived_posts/202102/a.jpg?x=1", 1612000000, "archived")]},
        f"{meta}/recently_deleted_content.json": {"ig_recently_deleted_media": [{"media": []}]},
        f"{meta}/profile_photos.json": {"ig_profile_picture": [
            {"uri": "media/profile/202001/p.jpg", "creation_timestamp": 1578000000,
             "title": "", "is_profile_picture": True}]},
        "media/posts/202408/single.jpg": jpeg(1),
        "media/posts/201703/c0.jpg": jpeg(2),
        "media/posts/201703/c1.mp4": MP4,
        "media/posts/201703/c2.webp": jpeg(3),  # the extension lies: it is a JPEG
        "media/stories/202101/s.jpg": jpeg(4),
        "media/reels/r.mp4": MP4,
        "media/reels/r.srt": "1\n00:00:00,000 --> 00:00:01,000\nhi\n",
        "media/archived_posts/202102/a.jpg": jpeg(5),
        "media/profile/202001/p.jpg": jpeg(6),
        "media/other/orphan.jpg": jpeg(7),
        "media/other/noext": MP4,  # DASH video with no extension
    }


@pytest.mark.parametrize("layout", ["B", "C", "D"])
@pytest.mark.parametrize("as_zip", [False, True])
def test_layouts_b_c_d_read_every_kind_with_context(tmp_path, photo_bytes, layout, as_zip):
    files = full_export(layout, photo_bytes)
    src = (write_zip(tmp_path / "instagram-jane-2025-10-29-UXHp.zip", files) if as_zip
           else write_tree(tmp_path / "export", files))
    archive, scan = scan_archive([src])
    archive.close()
    photos = by_path(scan)
    assert set(photos) == {
        "media/posts/202408/single.jpg", "media/posts/201703/c0.jpg",
        "media/posts/201703/c2.webp", "media/stories/202101/s.jpg",
        "media/archived_posts/202102/a.jpg", "media/profile/202001/p.jpg",
        "media/other/orphan.jpg"}
    single = photos["media/posts/202408/single.jpg"]
    assert single.kind == KIND_POST
    assert single.caption == "A rainy day lunch 🥰 #sub"
    assert single.taken_at == "2024-08-04T19:52:36+00:00"
    assert single.carousel_index is None
    c2 = photos["media/posts/201703/c2.webp"]
    assert (c2.kind, c2.caption, c2.carousel_index) == (KIND_POST, "Weekend in Lisbon", 2)
    assert c2.taken_at == "2017-03-10T13:40:57+00:00"  # the post's time, not the item's
    assert photos["media/posts/201703/c0.jpg"].carousel_index == 0
    assert photos["media/stories/202101/s.jpg"].kind == KIND_STORY
    assert photos["media/archived_posts/202102/a.jpg"].kind == KIND_ARCHIVED
    assert photos["media/profile/202001/p.jpg"].kind == KIND_PROFILE
    orphan = photos["media/other/orphan.jpg"]
    assert (orphan.kind, orphan.taken_at) == (KIND_UNLISTED, None)
    assert scan.videos == 3  # c1.mp4, r.mp4, and the extension-less DASH file
    assert scan.subtitles == 1
    assert sorted(scan.missing) == ["https://cdn.example/v/t51.jpg?stp=dst-jpg",
                                    "media/posts/202001/missing.jpg"]
    assert sorted(scan.orphans) == ["media/other/noext", "media/other/orphan.jpg"]
    assert scan.layouts == [layout]


def test_layout_a_media_json(tmp_path, photo_bytes):
    files = {
        "media.json": {
            "photos": [{"path": "photos/201805/a.jpg", "taken_at": "2018-05-12T14:33:01+00:00",
                        "caption": mojibake("Ça va ☕")}],
            "videos": [{"path": "videos/201805/v.mp4", "taken_at": "2018-05-12T14:33:01",
                        "caption": ""}],
            "stories": [{"path": "stories/201806/s.jpg", "taken_at": "2018-06-01T10:00:00",
                         "caption": ""}],
            "profile": {"path": "profile/201801/p.jpg", "taken_at": "2018-01-01T00:00:00"},
        },
        "photos/201805/a.jpg": photo_bytes(1),
        "videos/201805/v.mp4": MP4,
        "stories/201806/s.jpg": photo_bytes(2),
        "profile/201801/p.jpg": photo_bytes(3),
    }
    archive, scan = scan_archive([write_zip(tmp_path / "jane_20200101.zip", files)])
    archive.close()
    photos = by_path(scan)
    assert photos["photos/201805/a.jpg"].caption == "Ça va ☕"
    assert photos["photos/201805/a.jpg"].taken_at == "2018-05-12T14:33:01+00:00"
    assert photos["stories/201806/s.jpg"].kind == KIND_STORY
    assert photos["profile/201801/p.jpg"].kind == KIND_PROFILE
    assert scan.videos == 1 and scan.layouts == ["A"]


def test_single_object_posts_file_and_reels_and_deleted(tmp_path, photo_bytes):
    meta = LAYOUT_DIRS["D"]
    files = {
        f"{meta}/posts_1.json": post("media/posts/202401/one.jpg", 1704067200, "only post"),
        f"{meta}/reels.json": {"ig_reels_media": [post("media/reels/cover.jpg", 1704067300)]},
        f"{meta}/recently_deleted_content.json": {"ig_recently_deleted_media": [
            post("media/recently_deleted/202402/d.jpg", 1706745600, "oops")]},
        "media/posts/202401/one.jpg": photo_bytes(1),
        "media/reels/cover.jpg": photo_bytes(2),
        "media/recently_deleted/202402/d.jpg": photo_bytes(3),
    }
    archive, scan = scan_archive([write_tree(tmp_path / "x", files)])
    archive.close()
    photos = by_path(scan)
    assert photos["media/posts/202401/one.jpg"].caption == "only post"
    assert photos["media/reels/cover.jpg"].kind == KIND_REEL
    assert photos["media/recently_deleted/202402/d.jpg"].kind == KIND_DELETED


def test_split_zips_form_one_archive_and_wrapper_and_macosx_are_ignored(tmp_path, photo_bytes):
    meta = LAYOUT_DIRS["C"]
    part1 = write_zip(tmp_path / "instagram-jane-2024-01-01-abc_part_1.zip", {
        f"jane/{meta}/posts_1.json": [post("media/posts/202401/a.jpg", 1704067200, "a"),
                                      post("media/posts/202401/b.jpg", 1704067300, "b")],
        "jane/media/posts/202401/a.jpg": photo_bytes(1),
        "__MACOSX/jane/media/posts/202401/._a.jpg": b"junk",
        "jane/media/posts/202401/._a.jpg": b"junk",
    })
    part2 = write_zip(tmp_path / "instagram-jane-2024-01-01-abc_part_2.zip", {
        "jane/media/posts/202401/b.jpg": photo_bytes(2),
    })
    with Archive([part1, part2]) as archive:
        scan = archive.scan()
    assert sorted(by_path(scan)) == ["media/posts/202401/a.jpg", "media/posts/202401/b.jpg"]
    assert scan.missing == [] and scan.orphans == []
    # One part alone: the post whose media sits in the other part is reported missing.
    with Archive([part1]) as archive:
        scan = archive.scan()
    assert scan.missing == ["media/posts/202401/b.jpg"]


def test_plain_folder_without_json_is_a_fallback(tmp_path, photo_bytes):
    src = write_tree(tmp_path / "pics", {"a.jpg": photo_bytes(1), "sub/b.png": photo_bytes(2),
                                         "notes.txt": "hello", "clip.mov": MP4})
    with Archive([src]) as archive:
        scan = archive.scan()
    assert {p.path: p.kind for p in scan.photos} == {"a.jpg": KIND_PHOTO, "sub/b.png": KIND_PHOTO}
    assert scan.videos == 1 and scan.layouts == ["folder"]


def test_zip_is_read_without_extracting(tmp_path, photo_bytes, monkeypatch):
    zpath = write_zip(tmp_path / "e.zip", {"media/other/a.jpg": photo_bytes(1)})
    before = sorted(p.name for p in tmp_path.iterdir())
    with Archive([zpath]) as archive:
        data = archive.read("media/other/a.jpg")
    assert data == photo_bytes(1)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_zip_members_that_escape_are_refused(tmp_path, photo_bytes):
    zpath = tmp_path / "evil.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr("../../x.jpg", photo_bytes(1))
        zf.writestr("/etc/x.jpg", photo_bytes(2))
        zf.writestr("media/other/ok.jpg", photo_bytes(3))
        link = zipfile.ZipInfo("media/other/link.jpg")
        link.external_attr = (0o120777 << 16)
        zf.writestr(link, "/etc/passwd")
    with Archive([zpath]) as archive:
        scan = archive.scan()
    assert [p.path for p in scan.photos] == ["media/other/ok.jpg"]
    reasons = " ".join(str(p) for p in scan.problems)
    assert "../../x.jpg: member name escapes the archive" in reasons
    assert "/etc/x.jpg: member name escapes the archive" in reasons
    assert "symbolic link member" in reasons


def test_uris_with_dotdot_or_absolute_paths_never_leave_the_archive(tmp_path, photo_bytes):
    secret = tmp_path / "secret.jpg"
    secret.write_bytes(photo_bytes(9))
    meta = LAYOUT_DIRS["B"]
    src = write_tree(tmp_path / "exp", {
        f"{meta}/posts_1.json": [post("../secret.jpg", 1), post(str(secret), 2),
                                 post("media/posts/1/a.jpg", 3)],
        "media/posts/1/a.jpg": photo_bytes(1),
    })
    with Archive([src]) as archive:
        scan = archive.scan()
    assert [p.path for p in scan.photos] == ["media/posts/1/a.jpg"]
    assert len(scan.missing) == 2


def test_no_readable_archive_is_an_error_naming_each(tmp_path):
    bad = tmp_path / "notazip.zip"
    bad.write_bytes(b"hello world")
    with pytest.raises(ArchiveError) as info:
        Archive([bad, tmp_path / "absent"])
    assert "notazip.zip: not a zip file or a folder" in str(info.value)
    assert "absent: no such file or folder" in str(info.value)


def test_one_bad_archive_does_not_stop_the_others(tmp_path, photo_bytes):
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"PK\x03\x04 truncated")
    good = write_tree(tmp_path / "good", {"a.jpg": photo_bytes(1)})
    with Archive([bad, good]) as archive:
        scan = archive.scan()
    assert [p.path for p in scan.photos] == ["a.jpg"]
    assert any("bad.zip" in str(p) and "unreadable zip" in str(p) for p in scan.problems)


def test_broken_json_is_reported_and_the_rest_indexed(tmp_path, photo_bytes):
    meta = LAYOUT_DIRS["D"]
    src = write_tree(tmp_path / "exp", {
        f"{meta}/posts_1.json": "[{not json",
        f"{meta}/stories.json": {"ig_stories": [
            {"uri": "media/stories/1/s.jpg", "creation_timestamp": "soon"},
            {"uri": "media/stories/1/t.jpg", "creation_timestamp": -5},
            {"media": "not a list"}, 7]},
        "media/stories/1/s.jpg": photo_bytes(1),
        "media/stories/1/t.jpg": photo_bytes(2),
    })
    with Archive([src]) as archive:
        scan = archive.scan()
    assert {p.path: p.taken_at for p in scan.photos} == {"media/stories/1/s.jpg": None,
                                                         "media/stories/1/t.jpg": None}
    text = "\n".join(str(p) for p in scan.problems)
    assert "posts_1.json: invalid JSON" in text
    assert "creation_timestamp is not a Unix time" in text
    assert "'media' is not a list" in text
    assert "not an object" in text


def test_mojibake_repair():
    assert repair_mojibake(mojibake("Café 🥰 — naïve")) == "Café 🥰 — naïve"
    assert repair_mojibake("already fine 🥰") == "already fine 🥰"  # not Latin-1: as is
    assert repair_mojibake("\u00c3(") == "\u00c3("  # Latin-1 but not UTF-8: as is


@given(st.text())
def test_mojibake_repair_roundtrips_any_text(text):
    assert repair_mojibake(mojibake(text)) == text


@pytest.mark.parametrize("name,safe", [
    ("media/a.jpg", "media/a.jpg"), ("./media//a.jpg", "media/a.jpg"),
    ("../a.jpg", None), ("media/../../a.jpg", None), ("/etc/passwd", None),
    ("C:/x.jpg", None), ("media\\..\\..\\x.jpg", None), ("", None),
])
def test_safe_member_name(name, safe):
    assert safe_member_name(name) == safe


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.sampled_from(["media", "uri", "title", "creation_timestamp", "ig_stories",
                         "photos", "path", "taken_at", "caption", "x"]), children, max_size=5),
    max_leaves=25)


@settings(max_examples=150, deadline=None)
@given(posts=json_values, stories=json_values, media_json=json_values)
def test_arbitrary_json_never_raises(tmp_path_factory, posts, stories, media_json):
    root = tmp_path_factory.mktemp("fuzz")
    write_tree(root, {
        "content/posts_1.json": json.dumps(posts),
        "content/stories.json": json.dumps(stories),
        "media.json": json.dumps(media_json),
        "media/posts/1/a.jpg": b"\xff\xd8\xff\xe0" + b"\x00" * 60,
    })
    with Archive([root]) as archive:
        scan = archive.scan()
    assert all(p.path in archive.files for p in scan.photos)
    # Every problem names a file and says why, in one line.
    assert all(p.path and p.reason and "\n" not in p.reason for p in scan.problems)


def test_folder_symlinks_are_not_followed(tmp_path, photo_bytes):
    outside = tmp_path / "outside.jpg"
    outside.write_bytes(photo_bytes(1))
    src = write_tree(tmp_path / "pics", {"a.jpg": photo_bytes(2)})
    (src / "link.jpg").symlink_to(outside)
    with Archive([src]) as archive:
        scan = archive.scan()
    assert [p.path for p in scan.photos] == ["a.jpg"]
    assert any("symbolic link" in str(p) for p in scan.problems)


def test_member_over_the_size_limit_is_refused(tmp_path, monkeypatch):
    zpath = write_zip(tmp_path / "bomb.zip", {"media/other/a.jpg": b"\xff\xd8\xff" + b"0" * 5000})
    with Archive([zpath]) as archive:
        with pytest.raises(ArchiveError, match="over the 1000-byte limit"):
            archive.read("media/other/a.jpg", limit=1000)


def test_a_member_whose_header_lies_about_its_size_is_refused_not_inflated(tmp_path):
    """The declared size says 100 bytes; the data inflates to 5 MB. zipfile reads no more
    than the declared size, and the CRC then fails: one error naming the member."""
    import struct
    import zipfile

    zpath = tmp_path / "liar.zip"
    with zipfile.ZipFile(zpath, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("media/other/a.jpg", b"\xff\xd8\xff" + b"\x00" * 5_000_000)
    raw = bytearray(zpath.read_bytes())
    local = raw.index(b"PK\x03\x04")
    central = raw.index(b"PK\x01\x02")
    struct.pack_into("<I", raw, local + 22, 100)  # uncompressed size, local header
    struct.pack_into("<I", raw, central + 24, 100)  # and in the central directory
    zpath.write_bytes(bytes(raw))
    with Archive([zpath]) as archive:
        assert archive.files["media/other/a.jpg"].size == 100  # the lie is believed...
        with pytest.raises(ArchiveError, match="unreadable") as info:
            archive.read("media/other/a.jpg", limit=1000)  # ...and refused, not inflated
        assert info.value.path == "media/other/a.jpg"


def test_a_file_that_grew_after_the_scan_is_read_no_further_than_the_cap(tmp_path):
    """A folder's file measured small when scanned and 5 MB when read: the read stops at
    the cap (our own, not a header's) and says so."""
    src = write_tree(tmp_path / "p", {"a.jpg": b"\xff\xd8\xff" + b"\x00" * 100})
    with Archive([src]) as archive:
        [name] = [n for n in archive.files if n.endswith("a.jpg")]
        assert archive.files[name].size < 1000
        (src / "a.jpg").write_bytes(b"\xff\xd8\xff" + b"\x00" * 5_000_000)
        with pytest.raises(ArchiveError, match="over the 1000-byte limit"):
            archive.read(name, limit=1000)


def test_scan_of_path_str(tmp_path: Path, photo_bytes):
    src = write_tree(tmp_path / "p", {"a.jpg": photo_bytes(1)})
    archive, scan = scan_archive([str(src)])
    archive.close()
    assert len(scan.photos) == 1
