"""Choose the embedding threshold from the person's own photos.

Each sampled archive photo is re-posted the ways people re-post (Instagram's resize
and re-encode, a crop, colour and light edits, a small rotation, a filter). Each
edited copy is checked exactly as `check` would check it: its similarity to its own
source is a positive, its best similarity to any other photo a negative.
"""

from __future__ import annotations

import io
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

from .archive import Archive
from .engines import Engine, ModelSpec, embed_images
from .errors import ArchiveError, DupecheckError, IndexUnusable
from .evidence import pdq_dihedral, pdq_hash, sha256_bytes
from .imaging import centre_crop_to_aspect, crop_variants, decode
from .localfeatures import closer_looks, extract_candidate
from .reposts import FORMS
from .search import Candidate, Searcher
from .store import Index

DEFAULT_PRECISION = 0.99
DEFAULT_SAMPLE = 40
THRESHOLDS = np.round(np.arange(0.50, 1.0001, 0.005), 3)

Edit = Callable[[Image.Image, random.Random], Image.Image]


def _resize_1080(img: Image.Image, rng: random.Random) -> Image.Image:
    if img.width <= 1080:
        return img
    return img.resize((1080, round(img.height * 1080 / img.width)), Image.Resampling.LANCZOS)


def _crop(img: Image.Image, rng: random.Random) -> Image.Image:
    return centre_crop_to_aspect(img, rng.choice((1.0, 0.8)))


def _brightness(img: Image.Image, rng: random.Random) -> Image.Image:
    return ImageEnhance.Brightness(img).enhance(rng.choice((0.8, 0.88, 1.12, 1.25)))


def _contrast(img: Image.Image, rng: random.Random) -> Image.Image:
    return ImageEnhance.Contrast(img).enhance(rng.choice((0.8, 1.2, 1.3)))


def _saturation(img: Image.Image, rng: random.Random) -> Image.Image:
    return ImageEnhance.Color(img).enhance(rng.choice((0.6, 1.3, 1.5)))


def _warmth(img: Image.Image, rng: random.Random) -> Image.Image:
    shift = rng.choice((-14, -8, 8, 14))
    r, g, b = img.split()
    return Image.merge("RGB", (r.point(lambda v: max(0, min(255, v + shift))), g,
                               b.point(lambda v: max(0, min(255, v - shift)))))


def _rotation(img: Image.Image, rng: random.Random) -> Image.Image:
    angle = rng.choice((-3.0, -2.0, 2.0, 3.0))
    rotated = img.rotate(angle, Image.Resampling.BILINEAR, expand=False)
    w, h = img.size  # crop away the corners the rotation left empty
    m = int(max(w, h) * np.sin(np.radians(abs(angle)))) + 1
    return rotated.crop((m, m, w - m, h - m))


def _offcentre_crop(img: Image.Image, rng: random.Random) -> Image.Image:
    """A re-edit's crop: 55-85% of each side kept, anywhere in the frame."""
    w, h = img.size
    cw, ch = round(w * rng.uniform(0.55, 0.85)), round(h * rng.uniform(0.55, 0.85))
    left, top = rng.randint(0, w - cw), rng.randint(0, h - ch)
    return img.crop((left, top, left + cw, top + ch))


def _straighten(img: Image.Image, rng: random.Random) -> Image.Image:
    """2-5 degrees either way, the corners the rotation left empty cropped away."""
    angle = rng.uniform(2.0, 5.0) * rng.choice((-1, 1))
    w, h = img.size
    rotated = img.rotate(angle, Image.Resampling.BICUBIC, expand=False)
    a = math.radians(abs(angle))
    # The largest axis-aligned rectangle of the same aspect inside the rotated frame.
    k = 1 / (math.cos(a) + max(w / h, h / w) * math.sin(a))
    cw, ch = int(w * k) - 2, int(h * k) - 2
    left, top = (w - cw) // 2, (h - ch) // 2
    return rotated.crop((left, top, left + cw, top + ch))


def _grade(img: Image.Image, rng: random.Random) -> Image.Image:
    """A colour grade: light, contrast, saturation and warmth together."""
    for edit in (_brightness, _contrast, _saturation, _warmth):
        if rng.random() < 0.75:
            img = edit(img, rng)
    return img


def _black_and_white(img: Image.Image, rng: random.Random) -> Image.Image:
    return ImageEnhance.Contrast(img.convert("L")).enhance(rng.uniform(1.0, 1.3)).convert("RGB")


def _filter(img: Image.Image, rng: random.Random) -> Image.Image:
    soft = img.filter(ImageFilter.GaussianBlur(1.2))
    sepia = Image.merge("RGB", [c.point(lambda v, k=k: min(255, int(v * k)))
                                for c, k in zip(img.convert("L").convert("RGB").split(),
                                                (1.07, 0.94, 0.75), strict=True)])
    return Image.blend(soft, sepia, 0.35)


EDITS: dict[str, Edit] = {
    "instagram resize": _resize_1080,
    "crop 1:1 or 4:5": _crop,
    "brightness": _brightness,
    "contrast": _contrast,
    "saturation": _saturation,
    "warmth": _warmth,
    "rotation 2-3 deg": _rotation,
    "filter": _filter,
    "off-centre crop": _offcentre_crop,
    "straightening 2-5 deg": _straighten,
}


def _chain(*edits: Edit) -> Edit:
    def edit(img: Image.Image, rng: random.Random) -> Image.Image:
        for step in edits:
            img = step(img, rng)
        return img
    return edit


# "The same photo, edited again" from the original: what `re-framed` is for. Used by the
# tests and scripts/bench.py to measure recall and false matches on real photos.
REEDITS: dict[str, Edit] = {
    "off-centre crop": _offcentre_crop,
    "straighten": _straighten,
    "crop + grade": _chain(_offcentre_crop, _grade),
    "straighten + black and white": _chain(_straighten, _black_and_white),
    "straighten + crop + grade": _chain(_straighten, _offcentre_crop, _grade),
    "crop + black and white": _chain(_offcentre_crop, _black_and_white),
    "grade": _grade,
    "black and white": _black_and_white,
}

# Forms a posted photo comes back in that only local features or PDQ's turned hashes can
# find (dupecheck.reposts): `calibrate` says which evidence caught them, but keeps them out
# of the embedding's positives, which measure re-edits. A collage's other cells are plain
# colours here: the archive's own photos there would be their own matches.
FORM_EDITS: dict[str, Edit] = {
    name: (lambda img, rng, form=FORMS[name]: form(img, rng, []))
    for name in ("mirror", "quarter turn", "detail", "collage")}


def reedit(img: Image.Image, name: str, rng: random.Random) -> bytes:
    """One re-edit as the person exports it: the edit, a resize to 1080-2048 px, a JPEG."""
    edited = REEDITS[name](img.convert("RGB"), rng)
    edited.thumbnail((rng.choice((1080, 1440, 2048)),) * 2, Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    edited.save(buf, "JPEG", quality=rng.randint(75, 92))
    return buf.getvalue()


def _repost(img: Image.Image, edit: Edit, rng: random.Random) -> Image.Image:
    """The edit, then Instagram's resize and a JPEG re-encode at quality 70-90."""
    edited = _resize_1080(edit(img, rng), rng)
    buf = io.BytesIO()
    edited.convert("RGB").save(buf, "JPEG", quality=rng.randint(70, 90))
    return decode(buf.getvalue(), "edited.jpg").image


@dataclass
class ThresholdRow:
    threshold: float
    precision: float
    recall: float


@dataclass
class Calibration:
    model: str
    precision_target: float
    sampled: int
    positives: list[float] = field(default_factory=list)
    negatives: list[float] = field(default_factory=list)
    by_edit: dict[str, list[float]] = field(default_factory=dict)
    table: list[ThresholdRow] = field(default_factory=list)
    recommended: float | None = None
    margin: float | None = None  # recommended threshold minus the highest negative below it
    skipped: list[str] = field(default_factory=list)
    threshold: float = 1.0  # the threshold in force, for `caught`
    # edit -> evidence -> copies: which evidence found the copy's own source, as `check`
    # would at the threshold in force ("missed" when none did)
    caught: dict[str, dict[str, int]] = field(default_factory=dict)

    def document(self) -> dict[str, object]:
        return {
            "model": self.model, "precision_target": self.precision_target,
            "sampled": self.sampled, "recommended": self.recommended, "margin": self.margin,
            "edits": {k: float(np.mean(v)) for k, v in self.by_edit.items() if v},
            "table": [vars(r) for r in self.table],
            "skipped": self.skipped,
            "threshold_in_force": self.threshold,
            "caught": self.caught,
        }


def precision_recall(positives: np.ndarray, negatives: np.ndarray,
                     thresholds: np.ndarray = THRESHOLDS) -> list[ThresholdRow]:
    rows = []
    for t in thresholds:
        tp = int((positives >= t).sum())
        fp = int((negatives >= t).sum())
        precision = tp / (tp + fp) if tp + fp else 1.0
        recall = tp / len(positives) if len(positives) else 0.0
        rows.append(ThresholdRow(float(t), precision, recall))
    return rows


def _caught_by(searcher: Searcher, copy: Image.Image, variants: list[tuple[str, Image.Image]],
               vectors: np.ndarray, source_sha256: str, threshold: float) -> str:
    """The evidence `check` gives the copy's own source, or "missed"."""
    full = pdq_dihedral(copy)
    hashes = np.stack([full[0]] + [pdq_hash(img) for _, img in variants[1:]])
    candidate = Candidate("edited copy", sha256_bytes(copy.tobytes()), [v for v, _ in variants],
                          hashes, np.zeros((len(variants), 0), np.float32),
                          extract_candidate(copy) if searcher.local else None,
                          closer=closer_looks(copy) if searcher.local else None,
                          pdq_turned=full[1:])
    result = searcher.search(candidate, vectors, threshold, top_k=5)
    for match in result.matches:
        if match.photo.sha256 == source_sha256 and match.evidence:
            return match.evidence
    return "missed"


def calibrate(index: Index, spec: ModelSpec, engine: Engine, *, sample: int = DEFAULT_SAMPLE,
              precision: float = DEFAULT_PRECISION, seed: int = 0,
              threshold: float | None = None,
              progress: Callable[[int, int], None] | None = None) -> Calibration:
    """Positives, negatives and the recommended threshold for one model; and, per edit,
    which evidence caught the copies at the threshold in force."""
    if len(index) < 2:
        raise IndexUnusable("calibration needs an index of at least two photos", index.root)
    archives = [Path(a) for a in index.archives]
    try:
        archive = Archive(archives)
    except ArchiveError as exc:
        raise IndexUnusable(f"calibration re-reads the archive the index was built from, "
                            f"which cannot be read now ({exc.reason})", index.root) from exc
    rng = random.Random(seed)
    matrix = np.asarray(index.embeddings(spec.name))
    rows = rng.sample(range(len(index)), min(sample, len(index)))
    result = Calibration(spec.name, precision, 0, by_edit={k: [] for k in EDITS},
                         threshold=threshold if threshold is not None
                         else spec.default_threshold, caught={k: {} for k in EDITS})
    searcher = Searcher(index, spec.name)
    with archive:
        for done, row in enumerate(rows, 1):
            photo = index.photos[row]
            try:
                source = decode(archive.read(photo.path), photo.path).image
            except DupecheckError as exc:
                result.skipped.append(str(exc))
                continue
            result.sampled += 1
            same = np.array([p.sha256 == photo.sha256 for p in index.photos])
            for name, edit in EDITS.items():
                copy = _repost(source, edit, rng)
                variants = crop_variants(copy)
                vectors = embed_images(engine, np.stack([spec.to_input(v) for _, v in variants]),
                                       batch_size=spec.batch_size)
                best = (matrix @ vectors.T).max(axis=1)
                result.positives.append(float(best[row]))
                result.by_edit[name].append(float(best[row]))
                result.negatives.append(float(best[~same].max()))
                evidence = _caught_by(searcher, copy, variants, vectors, photo.sha256,
                                      result.threshold)
                tally = result.caught[name]
                tally[evidence] = tally.get(evidence, 0) + 1
            for name, edit in FORM_EDITS.items():  # which evidence finds them, no more
                copy = _repost(source, edit, rng)
                variants = crop_variants(copy)
                vectors = embed_images(engine, np.stack([spec.to_input(v) for _, v in variants]),
                                       batch_size=spec.batch_size)
                evidence = _caught_by(searcher, copy, variants, vectors, photo.sha256,
                                      result.threshold)
                tally = result.caught.setdefault(name, {})
                tally[evidence] = tally.get(evidence, 0) + 1
            if progress:
                progress(done, len(rows))
    pos, neg = np.array(result.positives), np.array(result.negatives)
    result.table = precision_recall(pos, neg)
    floor = spec.min_threshold or 0.0
    reaching = [r for r in result.table
                if r.precision >= precision and r.recall > 0 and r.threshold >= floor]
    if reaching:
        result.recommended = reaching[0].threshold
        below = neg[neg < result.recommended]
        result.margin = float(result.recommended - below.max()) if len(below) else None
    return result
