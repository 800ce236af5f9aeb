"""The map's layout and motifs (photomap.py) and the models' words for them (vocabulary)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageOps

from dupecheck.engines import get_model_spec
from dupecheck.engines.vocabulary import PHOTO_SUBJECTS, SUBJECT_PROMPT, load_vocabulary
from dupecheck.photomap import OTHER, build_map, cluster, layout
from dupecheck.store import open_index


def edited_copies(img: Image.Image) -> list[Image.Image]:
    """The same photo, edited lightly (the tiny test model pools colours on a 4 x 8 grid,
    so these are the edits it is blind to; the map itself never looks at pixels)."""
    w, h = img.size
    return [img,
            ImageEnhance.Brightness(img).enhance(1.05),
            ImageEnhance.Sharpness(img).enhance(2.0),
            img.crop((w // 30, h // 30, w - w // 30, h - h // 30)),
            img.resize((w * 3 // 5, h * 3 // 5)),
            ImageEnhance.Color(img).enhance(1.3)]


PLANTED = ("jpg__Canon_EOS_30D_(4).jpg", "jpg__Nikon_D100.jpg", "jpg__Apple_iPhone_6.jpg",
           "jpg__Kodak_DX6490.jpg")


@pytest.fixture
def planted_index(tmp_path, real_photos, tiny_weights, cli):
    """Four real photos, six versions of each (original and five re-edits), in one
    plain folder indexed with the tiny test model."""
    folder = tmp_path / "photos"
    folder.mkdir()
    groups = []
    for g, name in enumerate(PLANTED):
        img = ImageOps.exif_transpose(Image.open(real_photos / name)).convert("RGB")
        img.thumbnail((640, 640))
        names = []
        for k, copy in enumerate(edited_copies(img)):
            names.append(f"g{g}-{k}.jpg")
            copy.save(folder / names[-1], quality=88)
        groups.append(names)
    idx = tmp_path / "idx"
    cli("index", str(folder), "--index", str(idx), "--model", "tiny-test",
        "--weights", str(tiny_weights))
    index = open_index(idx)
    by_name = {p.path.rsplit("/", 1)[-1]: row for row, p in enumerate(index.photos)}
    return index, [[by_name[n] for n in names] for names in groups]


def test_planted_groups_land_each_in_one_motif_of_its_own(planted_index):
    index, groups = planted_index
    amap = build_map(index, "tiny-test", motifs=None, seed=0)
    motif_of_group = []
    for rows in groups:
        found = {int(amap.motif_of[r]) for r in rows}
        assert len(found) == 1, (rows, amap.motif_of)
        motif_of_group.append(found.pop())
    assert len(set(motif_of_group)) == len(groups)  # and the groups are told apart
    names = {m.id: m.name for m in amap.motifs}
    assert all(names[m] != OTHER for m in motif_of_group)
    # Every photo belongs to exactly one motif, and the motifs' rows cover them all once.
    covered = sorted(r for m in amap.motifs for r in m.rows)
    assert covered == list(range(len(index)))


def test_layout_is_the_same_for_a_seed_and_differs_for_another(planted_index):
    index, _ = planted_index
    a = build_map(index, "tiny-test", motifs=4, seed=0)
    b = build_map(index, "tiny-test", motifs=4, seed=0)
    c = build_map(index, "tiny-test", motifs=4, seed=1)
    np.testing.assert_array_equal(a.xy, b.xy)
    np.testing.assert_array_equal(a.motif_of, b.motif_of)
    assert not np.allclose(a.xy, c.xy)
    assert a.xy.min() >= 0 and a.xy.max() <= 1


def test_planted_groups_sit_together_on_the_map(planted_index):
    index, groups = planted_index
    xy = build_map(index, "tiny-test", motifs=4, seed=0).xy
    centres = np.array([xy[rows].mean(axis=0) for rows in groups])
    for g, rows in enumerate(groups):
        own = np.linalg.norm(xy[rows] - centres[g], axis=1).max()
        others = min(np.linalg.norm(centres[h] - centres[g]) for h in range(len(groups))
                     if h != g)
        assert own < others, (g, own, others)


def _three_groups_and(extra: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 20)) * 10
    return np.concatenate([c + rng.normal(size=(60, 20)) for c in centres] + [extra]), centres


def test_a_photo_far_from_every_motif_goes_to_other():
    _, centres = _three_groups_and(np.zeros((0, 20)))
    direction = np.random.default_rng(1).normal(size=20)
    stray = centres[0] + 40 * direction / np.linalg.norm(direction)  # 9 spreads out
    points, _ = _three_groups_and(stray[None])
    motif_of, other = cluster(points, 3, seed=0)
    assert other is not None and motif_of[-1] == other
    assert sorted(np.bincount(motif_of[:-1]).tolist()) == [60, 60, 60]


def test_a_motif_of_one_photo_is_folded_into_other():
    _, centres = _three_groups_and(np.zeros((0, 20)))
    points, _ = _three_groups_and(centres[0][None] + 500.0)
    motif_of, other = cluster(points, 4, seed=0)  # k-means gives the stray its own cluster
    assert other == 3 and motif_of[-1] == other
    assert sorted(np.bincount(motif_of[:-1]).tolist()) == [60, 60, 60]


def test_few_photos_still_get_a_layout_and_a_motif():
    for n in (1, 2, 5):
        xy = layout(np.random.default_rng(n).normal(size=(n, 4)), seed=0)
        assert xy.shape == (n, 2) and np.isfinite(xy).all()
        motif_of, _ = cluster(np.random.default_rng(n).normal(size=(n, 4)), None, seed=0)
        assert len(motif_of) == n


def test_resnet50_names_a_motif_by_the_imagenet_class_its_classifier_gives(resnet50_weights):
    """The classifier comes from the same checkpoint the embedding was made with; photos
    that lie along class c's direction get c's name (torchvision's label for it)."""
    import torch
    from torchvision.models import ResNet50_Weights

    spec = get_model_spec("resnet50")
    vocab = load_vocabulary(spec, resnet50_weights)
    fc = torch.load(resnet50_weights, weights_only=True)["fc.weight"].numpy()
    categories = ResNet50_Weights.IMAGENET1K_V2.meta["categories"]
    assert vocab.labels == tuple(categories)
    rng = np.random.default_rng(0)
    for c in (1, 291, 978):  # goldfish, lion, seashore
        direction = fc[c] / np.linalg.norm(fc[c])
        photos = direction + 0.002 * rng.normal(size=(6, 2048))
        photos /= np.linalg.norm(photos, axis=1, keepdims=True)
        assert [vocab.labels[i] for i in vocab.top_label(photos)] == [categories[c]] * 6


@pytest.mark.slow
def test_mobileclip_names_by_its_own_text_tower(mobileclip_weights):
    import open_clip
    import torch

    from dupecheck.engines.torch_models import load_state_dict

    spec = get_model_spec("mobileclip-s2")
    vocab = load_vocabulary(spec, mobileclip_weights)
    assert vocab.labels == PHOTO_SUBJECTS
    model = open_clip.create_model("MobileCLIP-S2", pretrained=None)
    model.load_state_dict(load_state_dict(mobileclip_weights))
    with torch.inference_mode():
        text = model.eval().encode_text(open_clip.get_tokenizer("MobileCLIP-S2")(
            [SUBJECT_PROMPT.format("a dog")])).numpy()
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    assert vocab.labels[int(vocab.top_label(text)[0])] == "a dog"
    np.testing.assert_allclose(vocab.matrix[PHOTO_SUBJECTS.index("a dog")], text[0], atol=1e-4)


def test_a_map_without_model_words_numbers_its_motifs(planted_index):
    index, _ = planted_index
    amap = build_map(index, "tiny-test", motifs=4, seed=0)
    assert amap.named_by is None
    assert {m.name for m in amap.motifs} <= {f"motif {i}" for i in range(1, 6)} | {OTHER}
