"""dupecheck map: the archive seen as a whole."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import UsageError, WeightsUnavailable
from .app import app, err, error_boundary, out
from .commands import _index_model, _progress, _weights_for
from .options import IndexDir, JsonOut, ModelName, Quiet, Threshold, WeightsPath


def _motif_count(text: str) -> int | None:
    if text == "auto":
        return None
    try:
        k = int(text)
    except ValueError:
        raise UsageError(f"--motifs takes a number or 'auto', got {text!r}") from None
    if not 1 <= k <= 100:
        raise UsageError(f"--motifs must be between 1 and 100, got {k}")
    return k


@app.command("map")
@error_boundary
def map_command(
    index_dir: IndexDir,
    out_html: Annotated[Path, typer.Option(
        "--out", "-o", dir_okay=False, help="The page to write.")] = Path("map.html"),
    png: Annotated[Path | None, typer.Option(
        "--png", dir_okay=False, help="Also draw the map into this PNG (1600 px wide).")] = None,
    model: ModelName = None,
    weights: WeightsPath = None,
    motifs: Annotated[str, typer.Option(
        "--motifs", help="How many motifs: a number, or 'auto' to choose from the data."
    )] = "auto",
    seed: Annotated[int, typer.Option("--seed", help="The same seed gives the same map.")] = 0,
    threshold: Threshold = None,
    reframed: Annotated[bool | None, typer.Option(
        "--reframed/--no-reframed", show_default="on up to 2,000 photos",
        help="Join re-framed re-edits too, as `dupes` does (its slower pass: minutes on a "
        "large archive).")] = None,
    json_out: JsonOut = False,
    quiet: Quiet = False,
) -> None:
    """See the archive as a map: similar photos together, motifs outlined and named."""
    from .. import report
    from ..analysis import find_duplicates
    from ..engines.vocabulary import load_vocabulary
    from ..mapview import THUMB_CACHED, THUMB_HELD, write_html, write_png
    from ..photomap import REFRAMED_AUTO_ROWS, build_map
    from ..search import effective_threshold
    from ..store import open_index
    from ..thumbs import row_thumbnails

    k = _motif_count(motifs)
    for target in (out_html, png):
        if target is not None and not target.resolve().parent.is_dir():
            raise UsageError(f"{target}: its folder does not exist")
    index = open_index(index_dir)
    if len(index) == 0:
        raise UsageError("the index holds no photos yet; run `dupecheck index ARCHIVE` first")
    spec = _index_model(index, model)
    entry = index.models.get(spec.name)
    vocabulary, named_by = None, None
    if spec.vocabulary is not None:
        try:
            vocabulary = load_vocabulary(spec, _weights_for(index, spec, weights))
            named_by = spec.name
        except WeightsUnavailable as exc:
            err.print(f"motifs are numbered, not named: {report.visible(exc)}", markup=False)
    thr = effective_threshold(threshold, entry.threshold if entry else None, spec.default_threshold)
    with _progress(quiet or json_out) as bar:
        task = bar.add_task("same photo", total=len(index))
        if reframed is None:
            reframed = len(index) <= REFRAMED_AUTO_ROWS
        reframed = reframed and index.local is not None
        groups = find_duplicates(index, spec.name, thr, reframed=reframed,
                                 progress=lambda done, total: bar.update(task, completed=done))
        stage = bar.add_task("layout", total=None)
        amap = build_map(index, spec.name, k, seed, vocabulary, named_by,
                         [g.rows for g in groups],
                         progress=lambda what: bar.update(stage, description=what))
        bar.remove_task(stage)
        amap.reframed_joined = reframed
        task = bar.add_task("thumbnails", total=len(index))
        thumbs = row_thumbnails(index, range(len(index)), side=THUMB_CACHED, keep=THUMB_HELD,
                                progress=lambda done, total: bar.update(task, completed=done))
    files = {"page": str(out_html)}
    write_html(out_html, index, amap, thumbs)
    if png is not None:
        write_png(png, index, amap, thumbs)
        files["png"] = str(png)
    missing = sum(t is None for t in thumbs)
    if missing and not quiet:
        err.print(f"{missing} of {len(thumbs)} photos have no thumbnail (archive not found "
                  f"where it was indexed, or unreadable): drawn as dots")
    if json_out:
        out.print_json(data=report.map_document(amap, index, files))
    elif not quiet:
        report.render_map(out, amap, files)
