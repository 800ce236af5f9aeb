"""Seeing a check: one self-contained HTML page, or one contact-sheet PNG.

Thumbnails of archive photos are read from the archive the index was built from;
where it is gone, a grey tile says so. Every caption and path is escaped.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Iterator
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from .added import photo_reader
from .errors import DupecheckError
from .imaging import decode
from .search import CheckResult
from .store import Index

THUMB = 220


def _thumbnail(img: Image.Image, size: int = THUMB) -> Image.Image:
    img = img.copy()
    img.thumbnail((size, size), Image.Resampling.LANCZOS)
    return img


def _placeholder(text: str, size: int = THUMB) -> Image.Image:
    tile = Image.new("RGB", (size, size), (200, 200, 200))
    ImageDraw.Draw(tile).multiline_text((10, size // 2 - 10), text, fill=(60, 60, 60))
    return tile


def _thumbnails(index: Index, results: list[CheckResult]
                ) -> Iterator[tuple[CheckResult, Image.Image, list[Image.Image]]]:
    with photo_reader(index) as read:
        for result in results:
            try:
                cand = _thumbnail(decode(Path(result.photo).read_bytes(), result.photo,
                                         draft=THUMB * 2).image)
                for m in result.matches:  # where each re-framed archive photo sits in it
                    if m.transform is not None and m.transform.fills_part():
                        cand = _draw_box(cand, m.transform.box_in_photo)
            except (OSError, DupecheckError):
                cand = _placeholder("cannot read")
            tiles = []
            for m in result.matches:
                data = read(m.photo)
                try:
                    if data is None:
                        raise DupecheckError("archive not found")
                    tile = _thumbnail(decode(data, m.photo.path, draft=THUMB * 2).image)
                    tiles.append(_draw_box(tile, m.transform.box) if m.transform else tile)
                except DupecheckError:
                    tiles.append(_placeholder("archive\nnot found"))
            yield result, cand, tiles


BOX_COLOUR = (255, 196, 0)


def _draw_box(tile: Image.Image, box: tuple[float, float, float, float]) -> Image.Image:
    """Where a re-framed candidate sits in the archive photo, outlined on its thumbnail."""
    w, h = tile.size
    x0, y0, x1, y1 = box
    outlined = tile.convert("RGB").copy()
    ImageDraw.Draw(outlined).rectangle(
        (round(x0 * (w - 1)), round(y0 * (h - 1)), round(x1 * (w - 1)), round(y1 * (h - 1))),
        outline=BOX_COLOUR, width=3)
    return outlined


def _data_uri(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "JPEG", quality=82)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


_CSS = """
body{font-family:system-ui,sans-serif;margin:24px;background:#fafafa;color:#222}
section{background:#fff;border:1px solid #ddd;border-radius:8px;padding:16px;margin:0 0 20px}
h2{font-size:16px;margin:0 0 12px;word-break:break-all}
.verdict{padding:2px 8px;border-radius:4px;color:#fff}
.exact,.near-identical,.re-framed{background:#c62828}.similar{background:#ef8f00}.new{background:#2e7d32}
.row{display:flex;gap:14px;flex-wrap:wrap;align-items:flex-start}
figure{margin:0;width:220px}figure img{max-width:220px;max-height:220px;display:block}
figcaption{font-size:12px;line-height:1.4;word-break:break-word}
.candidate figcaption{font-weight:bold}.muted{color:#777}
"""


def write_html(path: Path, index: Index, model: str, threshold: float,
               results: list[CheckResult]) -> None:
    """One page: each candidate beside its top-k matches, thumbnails embedded."""
    e = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>dupecheck report"
             f"</title><style>{_CSS}</style></head><body>",
             f"<h1>dupecheck</h1><p class='muted'>model {e(model)}; similar: "
             f"{'off' if threshold >= 1.0 else f'cosine &ge; {threshold:g}'}; "
             f"near-identical: PDQ distance &le; 31 of 256 bits; re-framed: local features "
             f"verified geometrically (the box shows where the photo sits)</p>"]
    for result, cand, tiles in _thumbnails(index, results):
        verdict = result.verdict or "unreadable"
        parts.append(f"<section><h2>{e(result.photo)} <span class='verdict {e(verdict)}'>"
                     f"{e(verdict)}</span></h2><div class='row'>")
        parts.append(f"<figure class='candidate'><img alt='candidate' src='{_data_uri(cand)}'>"
                     f"<figcaption>the photo checked</figcaption></figure>")
        for m, tile in zip(result.matches, tiles, strict=True):
            caption = e(m.photo.caption) if m.photo.caption else "<span class='muted'>(no "\
                "caption)</span>"
            kind = m.photo.kind + (f" #{m.photo.carousel_index + 1}"
                                   if m.photo.carousel_index is not None else "")
            parts.append(
                f"<figure class='match'><img alt='match {m.rank}' src='{_data_uri(tile)}'>"
                f"<figcaption>#{m.rank} <b>{e(m.evidence or 'no match')}</b>"
                f"{f' ({e(m.variant)})' if m.evidence and not m.transform else ''}"
                f"{f' ({m.inliers} inliers; box: where the photo sits)' if m.transform else ''}"
                f"{' (mirrored)' if m.transform and m.transform.mirrored else ''}"
                f"<br>"
                f"score {m.score:.3f}, PDQ {m.pdq_distance}<br>"
                f"{e(kind)} {e((m.photo.taken_at or '')[:10])}<br>"
                f"<span class='caption'>{caption}</span><br>"
                f"<span class='muted path'>{e(m.photo.path)}</span></figcaption></figure>")
        parts.append("</div></section>")
    parts.append("</body></html>")
    path.write_text("".join(parts), encoding="utf-8")


def write_sheet(path: Path, index: Index, results: list[CheckResult]) -> None:
    """The same as one contact-sheet image: a row per candidate, its matches beside it."""
    rows = list(_thumbnails(index, results))
    columns = 1 + max((len(r.matches) for r in results), default=0)
    label_h = 46
    cell_w, cell_h = THUMB + 12, THUMB + label_h + 12
    sheet = Image.new("RGB", (max(1, columns) * cell_w, max(1, len(rows)) * cell_h),
                      (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for y, (result, cand, tiles) in enumerate(rows):
        cells = [(cand, f"{Path(result.photo).name}\n{result.verdict or 'unreadable'}")]
        cells += [(tile, f"#{m.rank} {m.evidence or '-'} {m.score:.3f}\n"
                         f"{m.photo.kind} {(m.photo.taken_at or '')[:10]}")
                  for m, tile in zip(result.matches, tiles, strict=True)]
        for x, (img, label) in enumerate(cells):
            left, top = x * cell_w + 6, y * cell_h + 6
            sheet.paste(img, (left, top))
            draw.multiline_text((left, top + THUMB + 4), label, fill=(20, 20, 20), font=font)
    sheet.save(path)
