"""The forms in which a posted photo comes back to Instagram.

People re-post the same exposure as a "no crop" square, a story, a screenshot of the post,
a watermarked copy, a photo of a print, a messenger re-share, a mirror image, a quarter
turn, a detail or one cell of a collage. `calibrate` makes them from the person's own
photos, and the tests and scripts/bench_reframed.py measure what `check` finds of them,
so each form is written once, here.
"""

from __future__ import annotations

import io
import random
from collections.abc import Callable

from PIL import Image, ImageDraw, ImageFilter, ImageOps

from .imaging import centre_crop_to_aspect

# (photo, random source, other photos for the forms that show several) -> the re-post
Form = Callable[[Image.Image, random.Random, list[Image.Image]], Image.Image]

SQUARE = 1080  # Instagram's 1:1 post, and a collage's canvas
STORY = (1080, 1920)  # 9:16
SCREEN = (1170, 2532)  # a phone's screenshot


def _fit(img: Image.Image, box: tuple[int, int]) -> Image.Image:
    """The whole photo, as large as fits in `box`."""
    scale = min(box[0] / img.width, box[1] / img.height)
    return img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))),
                      Image.Resampling.LANCZOS)


def _fill(img: Image.Image, box: tuple[int, int]) -> Image.Image:
    """The photo covering `box`, its centre kept (as a collage app fills a cell)."""
    return ImageOps.fit(img, box, Image.Resampling.LANCZOS)


def _paste_centred(canvas: Image.Image, img: Image.Image, dy: int = 0) -> tuple[int, int]:
    x, y = (canvas.width - img.width) // 2, (canvas.height - img.height) // 2 + dy
    canvas.paste(img, (x, y))
    return x, y


def _text(draw: ImageDraw.ImageDraw, xy: tuple[int, int], words: str, size: int,
          fill: tuple[int, int, int]) -> None:
    from PIL import ImageFont

    draw.text(xy, words, fill=fill, font=ImageFont.load_default(size))


def no_crop_borders(img: Image.Image, rng: random.Random, _: list[Image.Image]) -> Image.Image:
    """A "no crop" app: the whole photo in a square, white or black borders."""
    canvas = Image.new("RGB", (SQUARE, SQUARE), rng.choice(((255, 255, 255), (0, 0, 0))))
    margin = rng.randint(0, 60)
    _paste_centred(canvas, _fit(img, (SQUARE - 2 * margin, SQUARE - 2 * margin)))
    return canvas


def no_crop_blurred(img: Image.Image, rng: random.Random, _: list[Image.Image]) -> Image.Image:
    """A "no crop" app: the whole photo on a blurred, enlarged copy of itself."""
    canvas = _fill(img, (SQUARE, SQUARE)).filter(ImageFilter.GaussianBlur(rng.uniform(18, 30)))
    _paste_centred(canvas, _fit(img, (SQUARE, SQUARE)))
    return canvas


def story(img: Image.Image, rng: random.Random, _: list[Image.Image]) -> Image.Image:
    """A story: the photo on a 9:16 canvas, a caption and stickers over it."""
    colour = tuple(rng.randint(0, 255) for _ in range(3))
    canvas = Image.new("RGB", STORY, colour)  # type: ignore[arg-type]
    photo = _fit(img, (round(STORY[0] * rng.uniform(0.8, 1.0)), round(STORY[1] * 0.7)))
    x, y = _paste_centred(canvas, photo, dy=rng.randint(-120, 120))
    draw = ImageDraw.Draw(canvas)
    _text(draw, (60, max(20, y - 110)), rng.choice(("throwback", "one year ago", "still my "
                                                     "favourite", "#tbt")), 72, (255, 255, 255))
    for _ in range(rng.randint(1, 3)):  # stickers: a round badge, partly over the photo
        r = rng.randint(50, 90)
        cx = rng.randint(x, x + photo.width)
        cy = rng.choice((y, y + photo.height)) + rng.randint(-r, r)
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=(250, 200, 40), outline=(0, 0, 0),
                     width=4)
        _text(draw, (cx - r // 2, cy - 14), rng.choice(("wow", "<3", "new", "2019")), 28,
              (0, 0, 0))
    return canvas


def screenshot(img: Image.Image, rng: random.Random, _: list[Image.Image]) -> Image.Image:
    """A phone's screenshot of the post: the app's bars, name, icons and caption around it
    (the post as Instagram shows it: 4:5 when the photo is taller)."""
    if img.height > img.width * 5 / 4:
        img = centre_crop_to_aspect(img, 0.8)
    dark = rng.random() < 0.5
    ink, paper = ((240, 240, 240), (0, 0, 0)) if dark else ((20, 20, 20), (255, 255, 255))
    canvas = Image.new("RGB", SCREEN, paper)
    draw = ImageDraw.Draw(canvas)
    _text(draw, (60, 30), "9:41", 44, ink)
    draw.ellipse((40, 230, 140, 330), fill=(200, 120, 160))
    _text(draw, (170, 255), rng.choice(("jane.doe", "j_photos", "travels.of.j")), 44, ink)
    top = 370
    photo = img.resize((SCREEN[0], round(img.height * SCREEN[0] / img.width)),
                       Image.Resampling.LANCZOS)
    canvas.paste(photo, (0, top))
    below = top + photo.height + 30
    for k in range(4):  # like, comment, share, save
        draw.rectangle((40 + 110 * k, below, 110 + 110 * k, below + 70), outline=ink, width=6)
    _text(draw, (40, below + 110), "1,204 likes", 40, ink)
    _text(draw, (40, below + 170), "jane.doe what a day it was", 40, ink)
    return canvas


def watermark(img: Image.Image, rng: random.Random, _: list[Image.Image]) -> Image.Image:
    """A slight crop and a name in a corner."""
    w, h = img.size
    cut = [round(v * rng.uniform(0.0, 0.05)) for v in (w, h, w, h)]
    img = img.crop((cut[0], cut[1], w - cut[2], h - cut[3]))
    draw = ImageDraw.Draw(img)
    size = max(16, img.width // 22)
    x = rng.choice((size, img.width - 9 * size))
    y = rng.choice((size, img.height - 2 * size))
    _text(draw, (x, y), "(c) jane doe", size, (255, 255, 255))
    return img


def keystone(img: Image.Image, rng: random.Random, _: list[Image.Image]) -> Image.Image:
    """A photo of a print or a screen: the frame leaning back, a margin around it, soft."""
    w, h = img.size
    lean = rng.uniform(0.03, 0.08)
    # Where the source's corners land on the new canvas (top edge narrower: leaning back).
    margin = 0.08
    dst = [(w * (margin + lean), h * margin), (w * (1 - margin - lean), h * margin),
           (w * (1 - margin), h * (1 - margin)), (w * margin, h * (1 - margin))]
    if rng.random() < 0.5:  # or turned a little to one side
        dst = [(x + rng.uniform(-0.02, 0.02) * w, y + rng.uniform(-0.02, 0.02) * h)
               for x, y in dst]
    src = [(0, 0), (w, 0), (w, h), (0, h)]
    coeffs = _perspective(dst, src)
    background = Image.new("RGB", img.size, tuple(rng.randint(40, 200) for _ in range(3)))
    warped = img.transform(img.size, Image.Transform.PERSPECTIVE, coeffs,
                           Image.Resampling.BICUBIC)
    mask = Image.new("L", img.size, 255).transform(img.size, Image.Transform.PERSPECTIVE,
                                                   coeffs, Image.Resampling.BILINEAR)
    background.paste(warped, (0, 0), mask)
    return background.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 1.2)))


def _perspective(dst: list[tuple[float, float]], src: list[tuple[float, float]]
                 ) -> tuple[float, ...]:
    """Pillow's PERSPECTIVE coefficients mapping output points `dst` to input points `src`."""
    import numpy as np

    rows = []
    for (x, y), (u, v) in zip(dst, src, strict=True):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
    target = np.array([c for point in src for c in point], float)
    return tuple(np.linalg.solve(np.array(rows, float), target))


def messenger(img: Image.Image, rng: random.Random, _: list[Image.Image]) -> Image.Image:
    """A messenger's re-share: 480 px, then a JPEG of quality 35 (see `repost`)."""
    img = img.copy()
    img.thumbnail((480, 480), Image.Resampling.BILINEAR)
    return img


def mirror(img: Image.Image, rng: random.Random, _: list[Image.Image]) -> Image.Image:
    """Flipped left-right."""
    return ImageOps.mirror(img)


def quarter_turn(img: Image.Image, rng: random.Random, _: list[Image.Image]) -> Image.Image:
    """Turned 90 or 270 degrees in the pixels (no EXIF orientation to undo it)."""
    return img.transpose(rng.choice((Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_270)))


def detail(img: Image.Image, rng: random.Random, _: list[Image.Image]) -> Image.Image:
    """A detail: 35-50% of each side kept, anywhere in the frame."""
    w, h = img.size
    cw, ch = round(w * rng.uniform(0.35, 0.50)), round(h * rng.uniform(0.35, 0.50))
    left, top = rng.randint(0, w - cw), rng.randint(0, h - ch)
    return img.crop((left, top, left + cw, top + ch))


def collage(img: Image.Image, rng: random.Random, others: list[Image.Image]) -> Image.Image:
    """A 2x2 "photo dump": the photo fills one cell, three other photos the rest, a white
    gutter between them."""
    gutter = rng.choice((0, 8, 16))
    cell = (SQUARE - gutter) // 2
    canvas = Image.new("RGB", (SQUARE, SQUARE), (255, 255, 255))
    if len(others) >= 3:
        cells = rng.sample(others, 3)
    else:  # plain colours where no other photos are given
        cells = (others + [Image.new("RGB", (cell, cell), tuple(rng.randint(0, 255)
                                                                for _ in range(3)))
                           for _ in range(3)])[:3]
    cells.insert(rng.randrange(4), img)
    for k, photo in enumerate(cells):
        canvas.paste(_fill(photo.convert("RGB"), (cell, cell)), ((k % 2) * (cell + gutter),
                                                  (k // 2) * (cell + gutter)))
    return canvas


FORMS: dict[str, Form] = {
    "no crop, borders": no_crop_borders,
    "no crop, blurred": no_crop_blurred,
    "story": story,
    "screenshot": screenshot,
    "watermark": watermark,
    "keystone": keystone,
    "messenger": messenger,
    "mirror": mirror,
    "quarter turn": quarter_turn,
    "detail": detail,
    "collage": collage,
}
QUALITY = {"messenger": (35, 35)}  # JPEG quality range per form; others as a person exports
LOSSLESS = {"screenshot"}  # saved as PNG, as phones save screenshots


def repost(img: Image.Image, name: str, rng: random.Random,
           others: list[Image.Image] | None = None) -> bytes:
    """One form of the photo as a file, as it would be checked."""
    made = FORMS[name](img.convert("RGB"), rng, others or [])
    buf = io.BytesIO()
    if name in LOSSLESS:
        made.save(buf, "PNG")
    else:
        low, high = QUALITY.get(name, (75, 92))
        made.thumbnail((2048, 2048), Image.Resampling.LANCZOS)
        made.save(buf, "JPEG", quality=rng.randint(low, high))
    return buf.getvalue()
