"""reposts.py's forms, and `check` finding each: the mirror image (SIFT descriptors
permuted, PDQ's dihedral hashes), the quarter turn, a detail (the second look at the
archive photo's region), a collage (the grid's cells), with where each sits."""

from __future__ import annotations

import io
import json
import random

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageOps
from typer.testing import CliRunner

import tiny_engine
from dupecheck import localfeatures as lf
from dupecheck import search
from dupecheck.analysis import find_duplicates
from dupecheck.cli import app
from dupecheck.engines import load_engine
from dupecheck.evidence import DIHEDRAL, pdq_dihedral, pdq_distances, pdq_hash
from dupecheck.imaging import decode
from dupecheck.indexer import build_index
from dupecheck.reposts import FORMS, repost
from dupecheck.search import REFRAMED, check_photos
from dupecheck.store import open_index
from helpers import PHOTOS, instagramify, jpeg_bytes, synthetic_photo

TINY = tiny_engine.TINY
runner = CliRunner()
POSTED = ["jpg__Canon_EOS_30D_(4).jpg", "jpg__Nikon_D100.jpg", "jpg__Apple_iPhone_4S.jpg",
          "jpg__Olympus_E-10.jpg"]
NEVER = ["jpg__FujiFilm_DX-10.jpg", "jpg__Kodak_DX6490.jpg", "jpg__Panasonic_FZ5.jpg"]


def load(data: bytes) -> Image.Image:
    return decode(data, "photo.jpg").image


@pytest.fixture(scope="module")
def module_photos():
    return PHOTOS


@pytest.fixture(scope="module")
def photos(module_photos):
    return {n: load((module_photos / n).read_bytes()) for n in POSTED + NEVER}


@pytest.fixture(scope="module")
def posted_index(module_photos, tmp_path_factory):
    """The posted photos as Instagram posts them, indexed from a folder (the export a
    second look reads)."""
    root = tmp_path_factory.mktemp("forms")
    folder = root / "export"
    folder.mkdir()
    for i, name in enumerate(POSTED):
        (folder / f"{i}.jpg").write_bytes(instagramify((module_photos / name).read_bytes()))
    weights = tiny_engine.write_weights(root / "tiny.npy")
    build_index([folder], root / "idx", TINY, weights)
    return root / "idx", weights


def check(index_dir, weights, files: list[tuple[str, bytes]], tmp_path):
    paths = []
    for name, data in files:
        paths.append(tmp_path / name)
        paths[-1].write_bytes(data)
    engine = load_engine(TINY, weights)
    return check_photos(paths, open_index(index_dir), TINY, engine, 1.0, top_k=3)


# -- mirrors: descriptors and hashes ---------------------------------------------------------


def test_mirrored_descriptors_are_those_of_the_flipped_photo(photos):
    """The permutation is exact: each keypoint of the flipped photo (at the mirrored
    place) has the permuted descriptor of the original's, to rounding."""
    # At the side features are taken at: no reduction whose dropped edge pixels would
    # sample the flipped photo differently.
    img = photos[POSTED[0]].resize((384, 256), Image.Resampling.LANCZOS)
    a = lf.extract(img, 384, 256)
    b = lf.extract(ImageOps.mirror(img), 384, 256)
    derived = lf.mirror(a)
    near = np.linalg.norm(derived.points[:, None] - b.points[None], axis=2) < 1.5
    # SIFT gives a point one keypoint per dominant orientation: the closest descriptor of
    # those at the mirrored place.
    l1 = np.abs(derived.descriptors[:, None].astype(int)
                - b.descriptors[None].astype(int)).sum(axis=2)
    raw = np.abs(a.descriptors[:, None].astype(int) - b.descriptors[None].astype(int)).sum(2)
    placed = near.any(axis=1)
    assert placed.sum() > 100
    best = np.where(near, l1, 1 << 30).min(axis=1)[placed]
    unpermuted = np.where(near, raw, 1 << 30).min(axis=1)[placed]
    assert np.median(best) <= 2 and np.median(unpermuted) > 500
    assert lf.mirror(lf.mirror(a)).descriptors.tobytes() == a.descriptors.tobytes()


def test_pdq_dihedral_hashes_are_the_turned_and_mirrored_photos_hashes(photos):
    img = photos[POSTED[1]]
    hashes = pdq_dihedral(img)
    assert hashes.shape == (8, 32) and hashes[0].tobytes() == pdq_hash(img).tobytes()
    named = dict(zip(DIHEDRAL, hashes[1:], strict=True))
    # `img` is checked against each archive photo; as named, it is that photo turned.
    for name, archive in (("mirrored", ImageOps.mirror(img)),
                          ("turned 180", img.transpose(Image.Transpose.ROTATE_180)),
                          ("turned 90 clockwise", img.transpose(Image.Transpose.ROTATE_90)),
                          ("turned 90 counter-clockwise",
                           img.transpose(Image.Transpose.ROTATE_270))):
        assert int(pdq_distances(pdq_hash(archive)[None], named[name])[0]) <= 31, name
        assert int(pdq_distances(hashes[:1], pdq_hash(archive))[0]) > 31, name


# -- the rule: quarter turns accepted, nothing between --------------------------------------


def test_a_quarter_turn_is_re_framed_with_its_turn_and_a_half_turn_is_not(photos):
    img = photos[POSTED[0]]
    archive = lf.extract(img)
    for transpose, expected in ((Image.Transpose.ROTATE_90, 90.0),
                                (Image.Transpose.ROTATE_180, 180.0),
                                (Image.Transpose.ROTATE_270, -90.0)):
        v = lf.verify(lf.extract_candidate(img.transpose(transpose)), archive)
        assert v.reframed, (expected, v.reason)
        assert abs(lf.quarter_turn_offset(v.transform.rotation_deg)) < 1.0
        assert abs(abs(v.transform.rotation_deg) - abs(expected)) < 1.0
    turned = img.rotate(45, Image.Resampling.BICUBIC, expand=True)
    v = lf.verify(lf.extract_candidate(turned), archive)
    assert not v.reframed and "implausible rotation" in v.reason


def _facade(seed: int) -> Image.Image:
    """A symmetric building front: rows of windows mirrored about the middle, each seed
    its own sizes and colours. Two are alike in structure, not the same photo."""
    rng = random.Random(seed)
    img = Image.new("RGB", (800, 600), (rng.randint(150, 220),) * 3)
    draw = ImageDraw.Draw(img)
    for y in range(40, 560, rng.randint(70, 110)):
        height = rng.randint(30, 50)
        for x in range(30, 390, rng.randint(60, 90)):
            width = rng.randint(25, 45)
            shade = tuple(rng.randint(20, 120) for _ in range(3))
            draw.rectangle((x, y, x + width, y + height), fill=shade, outline=(250, 250, 250),
                           width=3)
            draw.rectangle((799 - x - width, y, 799 - x, y + height), fill=shade,
                           outline=(250, 250, 250), width=3)
    return img


def _text(seed: int) -> Image.Image:
    from PIL import ImageFont

    rng = random.Random(seed)
    img = Image.new("RGB", (800, 600), "white")
    draw = ImageDraw.Draw(img)
    words = "the quick brown fox jumps over a lazy dog posted photo again summer".split()
    for y in range(20, 580, 40):
        draw.text((20, y), " ".join(rng.choice(words) for _ in range(6)), fill="black",
                  font=ImageFont.load_default(size=28))
    return img


def _blocky(seed: int) -> Image.Image:
    return load(jpeg_bytes(synthetic_photo(seed, (320, 240)), quality=8))


@pytest.mark.parametrize("make", [_facade, _text, _blocky],
                         ids=["symmetric-facades", "text", "jpeg-block-grid"])
def test_alike_pictures_are_never_re_framed_mirrored_or_turned(make):
    """What fools local features, with the looks added: the mirror image and the quarter
    turns of one picture against another alike in structure."""
    pictures = [make(seed) for seed in range(4)]
    archive = [lf.extract(p) for p in pictures]
    for i, picture in enumerate(pictures):
        looks = [lf.extract(picture.transpose(t)) for t in
                 (Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_180,
                  Image.Transpose.ROTATE_270)] + [lf.extract(picture)]
        for j, other in enumerate(archive):
            if i == j:
                continue
            for look in looks:
                assert not lf.verify(look, other).reframed, (make.__name__, i, j)
                assert not lf.verify(lf.mirror(look), other, mirrored=True).reframed, (i, j)


def test_a_symmetric_photo_and_its_mirror_image_are_the_same_photo():
    """The flip side of the rule: a mirror image of the same facade is found."""
    facade = _facade(7)
    v = lf.verify_either(lf.extract_candidate(ImageOps.mirror(facade)), lf.extract(facade))
    assert v.reframed


def test_mirrored_and_turned_real_photos_are_never_re_framed_against_others(real_photos):
    """Every pair of 12 real photos (some are other shots of one scene), one side
    mirrored or turned a quarter: no false match."""
    paths = sorted(real_photos.iterdir())[:48:4]
    images = [decode(p.read_bytes(), p.name, draft=1024).image for p in paths]
    archive = [lf.extract(img) for img in images]
    for i, img in enumerate(images):
        turned = lf.extract_candidate(img.transpose(Image.Transpose.ROTATE_90))
        flipped = lf.mirror(lf.extract_candidate(img))
        for j, other in enumerate(archive):
            if i != j:
                assert not lf.verify(turned, other).reframed, (paths[i].name, paths[j].name)
                assert not lf.verify(flipped, other, mirrored=True).reframed, (i, j)


# -- check, end to end ----------------------------------------------------------------------


def test_every_form_of_a_posted_photo_is_found_and_of_others_none(photos, posted_index,
                                                                   tmp_path):
    """Each form of each posted photo is found at rank 1 with its own archive photo
    (embedding off); the same forms of photos never posted are all new."""
    index_dir, weights = posted_index
    rng = random.Random(5)
    others = [photos[n] for n in NEVER]
    files, owners = [], []
    for i, name in enumerate(POSTED):
        for form in FORMS:
            files.append((f"{i}-{form.replace(' ', '_').replace(',', '')}",
                          repost(photos[name], form, rng, others)))
            owners.append((i, form))
    never = [photos[n] for n in NEVER]
    for k, img in enumerate(never):
        for form in FORMS:
            files.append((f"never-{k}-{form.replace(' ', '_').replace(',', '')}",
                          repost(img, form, rng, [o for o in never if o is not img] + never)))
    results = check(index_dir, weights, files, tmp_path)
    missed = []
    for (i, form), result in zip(owners, results, strict=False):
        top = result.matches[0]
        if result.verdict == "new" or top.photo.path != f"{i}.jpg" or top.evidence is None:
            missed.append((i, form, result.verdict, top.inliers))
    # Two of 44 may be missed (the issue's floor is 95%, 90% for details and collages).
    assert len(missed) <= 2, missed
    assert not [r.photo for r in results[len(owners):] if r.verdict != "new"]


def test_a_mirror_image_says_mirrored_in_json_and_in_words(photos, posted_index, tmp_path):
    index_dir, weights = posted_index
    original = photos[POSTED[2]]
    w, h = original.size
    # Mirrored and re-cropped (PDQ cannot see it): local features must say it.
    crop = ImageOps.mirror(original).crop((int(w * .1), int(h * .15), int(w * .85),
                                           int(h * .9)))
    path = tmp_path / "mirrored.jpg"
    path.write_bytes(jpeg_bytes(crop))
    out = runner.invoke(app, ["check", str(path), "--index", str(index_dir), "--model",
                              TINY.name, "--weights", str(weights), "-t", "1.0", "--json"])
    assert out.exit_code == 1, out.output
    top = json.loads(out.stdout)["results"][0]["matches"][0]
    assert top["evidence"] == REFRAMED and top["path"] == "2.jpg"
    assert top["transform"]["mirrored"] is True
    # The checked photo's left is the archive photo's right: box is where it sits there.
    assert np.allclose(top["transform"]["box"], [0.15, 0.15, 0.9, 0.9], atol=0.06)
    words = runner.invoke(app, ["check", str(path), "--index", str(index_dir), "--model",
                                TINY.name, "--weights", str(weights), "-t", "1.0"])
    assert "mirrored" in words.stdout
    # An exact mirror image is near-identical by PDQ's mirrored hash, and says so.
    exact = tmp_path / "flipped.jpg"
    exact.write_bytes(instagramify(jpeg_bytes(ImageOps.mirror(original), quality=92)))
    [result] = check(index_dir, weights, [("flipped.jpg", exact.read_bytes())], tmp_path)
    assert result.verdict == "near-identical" and "mirrored" in result.matches[0].variant


def test_a_mirrored_re_crop_is_found_by_the_mirror_look(photos, posted_index, tmp_path):
    """Mirrored and re-cropped, so that PDQ cannot see it: the mirror look alone must
    propose and verify it (with 32 voting descriptors it was missed)."""
    index_dir, weights = posted_index
    flipped = ImageOps.mirror(photos[POSTED[1]])
    w, h = flipped.size
    crop = flipped.crop((int(w * .1), int(h * .1), int(w * .8), int(h * .9)))
    [result] = check(index_dir, weights, [("flipped-crop.jpg", jpeg_bytes(crop))], tmp_path)
    top = result.matches[0]
    assert result.verdict == REFRAMED and top.photo.path == "1.jpg", top
    assert top.transform.mirrored


def test_a_collage_reports_where_each_posted_photo_sits(photos, posted_index, tmp_path):
    """Two posted photos in one 2x2 collage: both found, each with its cell."""
    index_dir, weights = posted_index
    cell = 540
    canvas = Image.new("RGB", (2 * cell, 2 * cell), "white")
    canvas.paste(ImageOps.fit(photos[POSTED[0]], (cell, cell)), (0, 0))  # top left
    canvas.paste(ImageOps.fit(photos[NEVER[0]], (cell, cell)), (cell, 0))
    canvas.paste(ImageOps.fit(photos[NEVER[1]], (cell, cell)), (0, cell))
    canvas.paste(ImageOps.fit(photos[POSTED[3]], (cell, cell)), (cell, cell))  # bottom right
    [result] = check(index_dir, weights, [("collage.jpg", jpeg_bytes(canvas))], tmp_path)
    found = {m.photo.path: m.transform.box_in_photo for m in result.matches
             if m.evidence == REFRAMED}
    assert set(found) == {"0.jpg", "3.jpg"}, result.matches
    # Each box holds its cell (a cell shows the photo's centre square: a 4:5 post reaches
    # past the cell, where the next cell shows another photo).
    for path, cell_box in (("0.jpg", (0, 0, 0.5, 0.5)), ("3.jpg", (0.5, 0.5, 1, 1))):
        x0, y0, x1, y1 = found[path]
        assert x0 <= cell_box[0] + 0.03 and y0 <= cell_box[1] + 0.03
        assert x1 >= cell_box[2] - 0.03 and y1 >= cell_box[3] - 0.03
        assert (x1 - x0) * (y1 - y0) < 0.4, (path, found[path])


def test_a_detail_is_found_by_the_second_look_at_the_export(photos, posted_index, tmp_path,
                                                            monkeypatch):
    """A detail keeping 38% of each side: the stored features alone agree in too few
    keypoints; the archive photo's region, read from the export, settles it. Without the
    export the same check finds nothing (and no error)."""
    index_dir, weights = posted_index
    img = photos[POSTED[3]]
    w, h = img.size
    detail = img.crop((int(w * .5), int(h * .4), int(w * .88), int(h * .78)))
    data = jpeg_bytes(detail, quality=88)
    looked = []
    original = search.Searcher._archive_photo
    monkeypatch.setattr(search.Searcher, "_archive_photo",
                        lambda self, row: looked.append(row) or original(self, row))
    [result] = check(index_dir, weights, [("detail.jpg", data)], tmp_path)
    assert result.verdict == REFRAMED and result.matches[0].photo.path == "3.jpg"
    assert looked and looked[0] == result.matches[0].row
    monkeypatch.setattr(search.Searcher, "_archive_photo", lambda self, row: None)
    [result] = check(index_dir, weights, [("detail.jpg", data)], tmp_path)
    assert result.verdict == "new"


def test_dupes_finds_a_mirrored_re_post_inside_the_archive(real_photos, tmp_path):
    folder = tmp_path / "export"
    folder.mkdir()
    for i, name in enumerate(POSTED[:3]):
        (folder / f"{i}.jpg").write_bytes(instagramify((real_photos / name).read_bytes()))
    original = load((real_photos / POSTED[0]).read_bytes())
    w, h = original.size
    flipped = ImageOps.mirror(original).crop((0, int(h * .1), int(w * .8), h))
    buf = io.BytesIO()
    flipped.save(buf, "JPEG", quality=85)
    (folder / "9-mirrored.jpg").write_bytes(buf.getvalue())
    weights = tiny_engine.write_weights(tmp_path / "t.npy")
    build_index([folder], tmp_path / "idx", TINY, weights)
    groups = find_duplicates(open_index(tmp_path / "idx"), TINY.name, 1.0)
    assert [(g.evidence, sorted(p.path for p in g.photos)) for g in groups] == [
        ("re-framed", ["0.jpg", "9-mirrored.jpg"])]


def test_every_form_is_made_at_a_plausible_size(photos):
    rng = random.Random(1)
    img = photos[POSTED[0]]
    for name in FORMS:
        made = load(repost(img, name, rng, [photos[n] for n in NEVER]))
        assert 300 <= max(made.size) <= 2532, name


@pytest.mark.slow
def test_the_held_back_forms_reach_the_issues_targets(shared_photos, tmp_path):
    """The figure README gives (scripts/bench_reframed.py section 1c, held-back part):
    each form of the 40 posted photos found at rank 1 with its own archive photo at
    least 95% of the time (details and collages 90%), embedding off, and not one form of
    the 47 never-posted photos flagged."""
    from helpers import form_cases, reedit_split

    posted, never, seed = reedit_split(list(shared_photos.iterdir()), "held-back")
    folder = tmp_path / "export"
    folder.mkdir()
    for i, path in enumerate(posted):
        (folder / f"{i:03d}.jpg").write_bytes(instagramify(path.read_bytes()))
    weights = tiny_engine.write_weights(tmp_path / "tiny.npy")
    build_index([folder], tmp_path / "idx", TINY, weights)
    cases = form_cases(posted, never, seed)
    results = check(tmp_path / "idx", weights,
                    [(f"case-{n:03d}", data) for n, (_, _, data) in enumerate(cases)], tmp_path)
    found: dict[str, int] = {}
    flagged = []
    for (own, form, _), result in zip(cases, results, strict=True):
        if own is None:
            if result.verdict != "new":
                flagged.append(form)
            continue
        top = result.matches[0]
        found[form] = found.get(form, 0) + (result.verdict != "new" and top.evidence is not None
                                            and top.photo.path == f"{own:03d}.jpg")
    assert not flagged
    for form, hits in found.items():
        assert hits / 40 >= (0.90 if form in ("detail", "collage") else 0.95), (form, hits)


def test_a_second_look_never_uses_an_export_photo_that_changed(module_photos, tmp_path):
    """The second look reads the archive photo the index recorded, by its path, and uses
    it only when its bytes are the recorded ones (their SHA-256): the same photo
    re-encoded in its place is not used, though it would match."""
    folder = tmp_path / "export"
    folder.mkdir()
    posted = instagramify((module_photos / POSTED[3]).read_bytes())
    (folder / "0.jpg").write_bytes(posted)
    weights = tiny_engine.write_weights(tmp_path / "t.npy")
    build_index([folder], tmp_path / "idx", TINY, weights)
    img = load((module_photos / POSTED[3]).read_bytes())
    w, h = img.size
    detail = jpeg_bytes(img.crop((int(w * .5), int(h * .4), int(w * .88), int(h * .78))),
                        quality=88)
    [found] = check(tmp_path / "idx", weights, [("detail.jpg", detail)], tmp_path)
    assert found.verdict == REFRAMED
    (folder / "0.jpg").write_bytes(jpeg_bytes(load(posted), quality=90))  # other bytes
    [result] = check(tmp_path / "idx", weights, [("detail.jpg", detail)], tmp_path)
    assert result.verdict == "new"
