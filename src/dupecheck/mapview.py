"""Seeing the map: one self-contained HTML page (thumbnails embedded, no CDN) and a PNG.

Thumbnails travel as a few sprite sheets rather than 10,000 images; every text from the
archive (captions, paths) reaches the page as JSON data and is shown with textContent, so
markup in a caption shows as text. The PNG is the same picture, drawn with Pillow.
"""

from __future__ import annotations

import base64
import io
import json
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .photomap import NAME_NOTE, OTHER, ArchiveMap
from .store import Index

THUMB_CACHED = 96  # thumbnails are cached at this size (thumbs.py)
THUMB_HELD = 64  # and held in memory at this one: the page draws 48, the PNG at most 120
CELL = 48  # thumbnail side in the page's sprite sheets, px
SHEET_COLUMNS = 64  # cells per sheet row: a sheet is at most 3072 x 3072 px
PNG_WIDTH = 1600
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#17becf", "#bcbd22", "#393b79", "#ad494a", "#637939", "#7b4173", "#3182bd",
           "#e6550d", "#31a354", "#756bb1", "#843c39", "#5254a3", "#8ca252")
OTHER_COLOUR = "#9e9e9e"
HULL_TRIM = 0.1  # the farthest tenth of a motif's points is left outside its outline


@dataclass
class MapPicture:
    """What both the page and the PNG draw."""

    colours: list[str]  # by motif id
    hulls: list[list[tuple[float, float]]]  # by motif id, in map coordinates
    centres: list[tuple[float, float]]


def picture(amap: ArchiveMap) -> MapPicture:
    colours, hulls, centres = [], [], []
    for motif in amap.motifs:
        colours.append(OTHER_COLOUR if motif.name == OTHER else
                       PALETTE[len([c for c in colours if c != OTHER_COLOUR]) % len(PALETTE)])
        pts = amap.xy[motif.rows]
        centre = np.median(pts, axis=0) if len(pts) else np.zeros(2)
        centres.append((float(centre[0]), float(centre[1])))
        hulls.append([] if motif.name == OTHER else _outline(pts, centre))
    return MapPicture(colours, hulls, centres)


def _outline(pts: np.ndarray, centre: np.ndarray) -> list[tuple[float, float]]:
    if len(pts) >= 10:
        d = np.linalg.norm(pts - centre, axis=1)
        pts = pts[d <= np.quantile(d, 1 - HULL_TRIM)]
    if len(pts) >= 3:
        from scipy.spatial import ConvexHull, QhullError

        try:
            hull = ConvexHull(pts)
            return [(float(x), float(y)) for x, y in pts[hull.vertices]]
        except QhullError:  # all in a line
            pass
    r = max(0.01, float(np.ptp(pts, axis=0).max()) / 2 + 0.01) if len(pts) else 0.01
    cx, cy = (pts.mean(axis=0) if len(pts) else centre)
    return [(float(cx + r * math.cos(a)), float(cy + r * math.sin(a)))
            for a in np.linspace(0, 2 * math.pi, 16, endpoint=False)]


def _sheets(thumbs: list[Image.Image | None]) -> list[str]:
    per_sheet = SHEET_COLUMNS * SHEET_COLUMNS
    sheets = []
    for start in range(0, max(1, len(thumbs)), per_sheet):
        chunk = thumbs[start:start + per_sheet]
        rows = max(1, math.ceil(len(chunk) / SHEET_COLUMNS))
        sheet = Image.new("RGB", (SHEET_COLUMNS * CELL, rows * CELL), (230, 230, 230))
        for i, img in enumerate(chunk):
            if img is None:
                continue
            tile = img.copy()
            tile.thumbnail((CELL, CELL), Image.Resampling.BILINEAR)
            x, y = (i % SHEET_COLUMNS) * CELL, (i // SHEET_COLUMNS) * CELL
            sheet.paste(tile, (x + (CELL - tile.width) // 2, y + (CELL - tile.height) // 2))
        buf = io.BytesIO()
        sheet.save(buf, "JPEG", quality=78)
        sheets.append("data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode())
    return sheets


def _script_json(data: object) -> str:
    """JSON safe inside <script>: no '<', '>' or '&' survives as itself."""
    return (json.dumps(data, ensure_ascii=False, separators=(",", ":"))
            .replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def page_data(index: Index, amap: ArchiveMap, thumbs: list[Image.Image | None]) -> dict:
    pic = picture(amap)
    return {
        "model": amap.model,
        "note": NAME_NOTE if amap.named_by else "motifs are numbered: no model words",
        "named_by": amap.named_by,
        "cell": CELL,
        "sheet_columns": SHEET_COLUMNS,
        "points": [[round(float(x), 5), round(float(y), 5), int(m), int(thumbs[i] is not None)]
                   for i, ((x, y), m) in enumerate(zip(amap.xy, amap.motif_of, strict=True))],
        "info": [[p.path, p.taken_at or "", p.kind, p.caption or ""] for p in index.photos],
        "motifs": [{"id": m.id, "name": m.name, "count": m.count, "colour": pic.colours[i],
                    "hull": [[round(x, 5), round(y, 5)] for x, y in pic.hulls[i]],
                    "centre": [round(c, 5) for c in pic.centres[i]]}
                   for i, m in enumerate(amap.motifs)],
        "years": {str(m): y for m, y in amap.years.items()},
        "links": [[a, b] for a, b in amap.duplicate_links()],
    }


def write_html(path: Path, index: Index, amap: ArchiveMap,
               thumbs: list[Image.Image | None]) -> None:
    template = resources.files("dupecheck").joinpath("map.html").read_text(encoding="utf-8")
    data = page_data(index, amap, thumbs)
    page = (template.replace("/*DATA*/null", _script_json(data))
            .replace("/*SHEETS*/null", _script_json(_sheets(thumbs))))
    _write_atomic(path, page.encode("utf-8"))


def _write_atomic(path: Path, data: bytes) -> None:
    import os

    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _rgb(colour: str) -> tuple[int, int, int]:
    return tuple(int(colour[i:i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]


def write_png(path: Path, index: Index, amap: ArchiveMap,
              thumbs: list[Image.Image | None], width: int = PNG_WIDTH) -> tuple[int, int]:
    """The map as one static image `width` px wide; returns its size."""
    pic = picture(amap)
    font = ImageFont.load_default(size=max(12, width // 70))
    small = ImageFont.load_default(size=max(10, width // 100))
    margin = width // 40
    side = width - 2 * margin
    n = max(1, len(index))
    thumb = int(max(6, min(120, side / math.sqrt(n) * 0.75)))
    legend_rows = math.ceil(len(amap.motifs) / 3)
    line = int(font.size * 1.5)
    years = sorted({y for per in amap.years.values() for y in per})
    strip_h = (len(amap.motifs) + 1) * int(small.size * 1.5) + line if years else 0
    height = margin + line + side + thumb + margin + legend_rows * line + strip_h + margin
    img = Image.new("RGB", (width, height), (250, 250, 250))
    draw = ImageDraw.Draw(img, "RGBA")
    photos, motifs = len(index), len(amap.motifs)
    draw.text((margin, margin // 2), f"dupecheck map: {photos} photo{'s' * (photos != 1)}, "
              f"{motifs} motif{'s' * (motifs != 1)} ({amap.model}"
              f"{'; ' + NAME_NOTE if amap.named_by else ''})",
              fill=(30, 30, 30), font=font)
    top = margin + line
    inner = side - thumb - 8  # the outermost thumbnails stay inside the map

    def at(x: float, y: float) -> tuple[float, float]:
        return margin + thumb / 2 + 4 + x * inner, top + thumb / 2 + 4 + y * inner

    for i, hull in enumerate(pic.hulls):
        if len(hull) >= 3:
            r, g, b = _rgb(pic.colours[i])
            draw.polygon([at(x, y) for x, y in hull], fill=(r, g, b, 28), outline=(r, g, b, 200),
                         width=3)
    for a, b in amap.duplicate_links():
        draw.line([at(*amap.xy[a]), at(*amap.xy[b])], fill=(200, 0, 0, 220), width=2)
    for row, (x, y) in enumerate(amap.xy):
        px, py = at(x, y)
        colour = _rgb(pic.colours[int(amap.motif_of[row])])
        t = thumbs[row] if row < len(thumbs) else None
        if t is None or thumb < 10:
            rad = max(2, thumb // 3)
            draw.ellipse((px - rad, py - rad, px + rad, py + rad), fill=colour)
            continue
        tile = t.copy()
        tile.thumbnail((thumb, thumb), Image.Resampling.BILINEAR)
        ox, oy = int(px - tile.width / 2), int(py - tile.height / 2)
        draw.rectangle((ox - 2, oy - 2, ox + tile.width + 1, oy + tile.height + 1), fill=colour)
        img.paste(tile, (ox, oy))
    for i, motif in enumerate(amap.motifs):
        if motif.name == OTHER:
            continue
        cx, cy = at(*pic.centres[i])
        label = f"{motif.name} ({motif.count})"
        box = draw.textbbox((cx, cy), label, font=font, anchor="mm")
        draw.rectangle((box[0] - 4, box[1] - 3, box[2] + 4, box[3] + 3), fill=(255, 255, 255, 215),
                       outline=_rgb(pic.colours[i]))
        draw.text((cx, cy), label, fill=(20, 20, 20), font=font, anchor="mm")
    y0 = top + side + thumb + margin
    col_w = (width - 2 * margin) // 3
    for i, motif in enumerate(amap.motifs):
        x = margin + (i % 3) * col_w
        y = y0 + (i // 3) * line
        draw.rectangle((x, y + 4, x + font.size, y + 4 + font.size), fill=_rgb(pic.colours[i]))
        draw.text((x + font.size + 8, y + 2), f"{motif.name}: {motif.count}",
                  fill=(30, 30, 30), font=font)
    if years:
        y = y0 + legend_rows * line + line // 2
        row_h = int(small.size * 1.5)
        label_w = min(col_w, width // 4)
        cell_w = max(8, (width - 2 * margin - label_w) // max(1, len(years)))
        peak = max((c for per in amap.years.values() for c in per.values()), default=1)
        for j, year in enumerate(years):
            draw.text((margin + label_w + j * cell_w, y), year[2:] if cell_w < 40 else year,
                      fill=(60, 60, 60), font=small)
        for i, motif in enumerate(amap.motifs):
            yy = y + (i + 1) * row_h
            draw.text((margin, yy), motif.name[:28], fill=(30, 30, 30), font=small)
            r, g, b = _rgb(pic.colours[i])
            for j, year in enumerate(years):
                c = amap.years.get(motif.id, {}).get(year, 0)
                if c:
                    alpha = int(40 + 215 * c / peak)
                    x = margin + label_w + j * cell_w
                    draw.rectangle((x, yy, x + cell_w - 2, yy + row_h - 3), fill=(r, g, b, alpha))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    _write_atomic(path, buf.getvalue())
    return img.size
