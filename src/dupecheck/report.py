"""Results for people (Rich tables) and for programs (one JSON document on stdout)."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from .search import EXACT, NEAR_IDENTICAL, NEW, REFRAMED, SIMILAR, CheckResult, Match
from .store import Index

if TYPE_CHECKING:  # not needed on the check path
    from .analysis import DuplicateGroup, SimilarityStats
    from .calibrate import Calibration
    from .indexer import IndexSummary
    from .photomap import ArchiveMap

CAPTION_WIDTH = 48
VERDICT_STYLE = {EXACT: "bold red", NEAR_IDENTICAL: "bold red", REFRAMED: "bold red",
                 SIMILAR: "bold yellow", NEW: "bold green"}
VERDICT_TEXT = {
    EXACT: "already posted: the very same file",
    NEAR_IDENTICAL: "already posted: the same photo, re-encoded or edited",
    REFRAMED: "already posted: the same photo, cropped, turned, mirrored or inside this one",
    SIMILAR: "probably posted: a very similar photo",
    NEW: "not posted yet",
}


# What a terminal would act on rather than show: C0 and C1 controls (ESC starts clipboard
# writes, title changes, screen clears), DEL, and the bidirectional overrides that reorder
# what is shown. Text from photos, captions and file names never reaches a terminal with
# them, nor as Rich markup.
_UNSHOWABLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def visible(text: object) -> str:
    """`text` as a terminal may show it: tabs and newlines as spaces, every other control
    character as a visible \\xNN (or \\uNNNN) escape."""
    line = str(text).replace("\t", " ").replace("\n", " ")
    return _UNSHOWABLE.sub(lambda m: f"\\x{ord(m[0]):02x}" if ord(m[0]) < 0x100
                           else f"\\u{ord(m[0]):04x}", line)


def markup_safe(text: object) -> str:
    """For an f-string that holds Rich markup of our own: the data shown, never obeyed."""
    return escape(visible(text))


def shorten(text: str | None, width: int = CAPTION_WIDTH) -> str:
    if not text:
        return ""
    line = visible(" ".join(text.split()))
    return line if len(line) <= width else line[: width - 1] + "…"


# -- check ---------------------------------------------------------------------------


def check_document(model: str, threshold: float, results: list[CheckResult]) -> dict[str, Any]:
    return {
        "model": model,
        "threshold": threshold,
        "results": [
            {
                "photo": r.photo,
                "verdict": r.verdict,
                **({"error": r.error} if r.error else {}),
                **({"skipped": r.skipped} if r.skipped else {}),
                "matches": [
                    {
                        "rank": m.rank,
                        "score": round(m.score, 6),
                        "pdq_distance": m.pdq_distance,
                        "evidence": m.evidence,
                        "variant": m.variant,
                        "kind": m.photo.kind,
                        "taken_at": m.photo.taken_at,
                        "caption": m.photo.caption,
                        "carousel_index": m.photo.carousel_index,
                        "path": m.photo.path,
                        "row": m.row,
                        "inliers": m.inliers,
                        "transform": m.transform.document() if m.transform else None,
                    }
                    for m in r.matches
                ],
            }
            for r in results
        ],
    }


def render_check(console: Console, model: str, threshold: float,
                 results: list[CheckResult], local: bool = True) -> None:
    for result in results:
        if result.verdict is None:
            continue  # its error line went to stderr
        style = VERDICT_STYLE[result.verdict]
        console.print(Text.assemble((visible(result.photo), "bold"), ": ", (result.verdict, style),
                                    f" ({VERDICT_TEXT[result.verdict]})"))
        if not result.matches:
            console.print("  (the index is empty)")
            continue
        table = Table(box=None, pad_edge=False, header_style="dim", show_edge=False)
        table.add_column("#", justify="right", no_wrap=True)
        table.add_column("score", justify="right", no_wrap=True)
        table.add_column("pdq", justify="right", no_wrap=True)
        table.add_column("evidence", no_wrap=True)
        table.add_column("kind", no_wrap=True)
        table.add_column("date", no_wrap=True)
        table.add_column("caption / path", overflow="fold", ratio=1)
        for m in result.matches:
            kind = m.photo.kind + (f" #{m.photo.carousel_index + 1}"
                                   if m.photo.carousel_index is not None else "")
            evidence = Text(m.evidence or "-", style=VERDICT_STYLE.get(m.evidence or "", "dim"))
            if m.evidence and m.evidence != REFRAMED and m.variant != "full":
                evidence.append(f" ({m.variant})", style="dim")
            where = Text(shorten(m.photo.caption) or "(no caption)",
                         style="" if m.photo.caption else "dim")
            where.append("\n" + visible(m.photo.path), style="dim")
            if m.evidence == REFRAMED:
                where.append(f"\nre-framed: {describe_transform(m)}", style="yellow")
            table.add_row(str(m.rank), f"{m.score:.3f}", str(m.pdq_distance), evidence,
                          Text(visible(kind)), Text(visible((m.photo.taken_at or "")[:10])),
                          where)
        console.print(table)
        if result.skipped:
            console.print(f"[dim]skipped {len(result.skipped)} archive photo(s) you marked not "
                          f"a match: {markup_safe(', '.join(result.skipped))}[/dim]")
        console.print()
    if all(r.verdict is None for r in results):
        return  # nothing was checked: the error lines say why
    similar = "off" if threshold >= 1.0 else f"cosine >= {threshold:g}"
    reframed = ("local features verified geometrically" if local
                else "off (the index holds no local features this version can use: "
                      "re-run `dupecheck index`)")
    console.print(f"[dim]model {model}; similar: {similar}; near-identical: PDQ distance "
                  f"<= 31 of 256 bits; re-framed: {reframed}[/dim]")


def describe_transform(m: Match) -> str:
    """Where the checked photo sits in the archive photo, in words."""
    if m.transform is None:
        return f"{m.inliers} inliers"
    t = m.transform
    x0, y0, x1, y1 = t.box
    turn = f", turned {t.rotation_deg:+.1f} deg" if abs(t.rotation_deg) >= 0.5 else ""
    mirrored = ", mirrored" if t.mirrored else ""
    if t.fills_part():  # a story, a screenshot, a collage's cell: where it sits in this one
        bx0, by0, bx1, by1 = t.box_in_photo
        return (f"{m.inliers} inliers; the posted photo fills {bx1 - bx0:.0%} x "
                f"{by1 - by0:.0%} of this photo, at {_where((bx0 + bx1) / 2, (by0 + by1) / 2)}"
                f"{turn}{mirrored}")
    return (f"{m.inliers} inliers; this photo is {x1 - x0:.0%} x {y1 - y0:.0%} of the posted "
            f"one{turn}{mirrored}")


def _where(x: float, y: float) -> str:
    """A point of a photo (fractions) in words: "top left", "centre", "bottom"."""
    row = "top" if y < 1 / 3 else "bottom" if y > 2 / 3 else ""
    column = "left" if x < 1 / 3 else "right" if x > 2 / 3 else ""
    return f"{row} {column}".strip() or "the centre"


# -- index ---------------------------------------------------------------------------


def index_document(summary: IndexSummary) -> dict[str, Any]:
    return asdict(summary)


def render_index_summary(console: Console, summary: IndexSummary) -> None:
    table = Table(title=f"dupecheck index: {summary.model}", show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column(justify="right")
    rows = [
        ("photos in the index", summary.photos),
        ("embedded now", summary.embedded),
        ("reused (unchanged content)", summary.reused),
        ("videos skipped", summary.videos),
        ("subtitles skipped", summary.subtitles),
        ("named in the JSON but missing", len(summary.missing)),
        ("orphans (in media/, named by no JSON)", len(summary.orphans)),
        ("files skipped with errors", len(summary.errors)),
    ]
    for label, value in rows:
        table.add_row(label, str(value))
    console.print(table)
    layouts = ", ".join(summary.layouts) or "none"
    console.print(f"[dim]layout {layouts}; {summary.precision}; index at "
                  f"{markup_safe(summary.index)}[/dim]")
    if summary.int8_fidelity and summary.precision == "int8":
        f = summary.int8_fidelity
        console.print(f"int8: cosine to fp32 >= {f['min_cosine']:.4f}, same nearest "
                      f"neighbour for {f['top1_agreement']:.1%} of {f['photos']} of your photos")
    if summary.precision_note:
        console.print(f"[yellow]{markup_safe(summary.precision_note)}[/yellow]")
    if summary.added_replaced:
        console.print(f"{summary.added_replaced} photo(s) you added since the last export are "
                      f"in this export now: its records replace them")
    if summary.added_kept:
        console.print(f"{len(summary.added_kept)} photo(s) you added are not in this export "
                      f"and stay added: " + markup_safe(", ".join(summary.added_kept)))
    for name in summary.dropped_models:
        console.print(f"[yellow]{name} embeddings dropped: they do not cover the new photos; "
                      f"run `dupecheck index ... --model {name}` to add them back[/yellow]")


# -- add ---------------------------------------------------------------------------


def add_document(summary: Any) -> dict[str, Any]:
    return asdict(summary)


def render_add(console: Console, summary: Any) -> None:
    for photo in summary.added:
        console.print(Text.assemble(("added ", "green"), visible(photo.path),
                                    (f"  {visible((photo.taken_at or '')[:10])}", "dim")))
    for path in summary.already:
        console.print(Text.assemble(("already in the index ", "dim"), visible(path)))
    console.print(f"[dim]{len(summary.added)} added; the index holds {summary.photos} "
                  f"photos[/dim]")


# -- info ----------------------------------------------------------------------------


def info_document(index: Index) -> dict[str, Any]:
    dates = sorted(p.taken_at for p in index.photos if p.taken_at)
    return {
        "index": str(index.root),
        "generation": index.generation,
        "photos": len(index.photos),
        "kinds": dict(Counter(p.kind for p in index.photos).most_common()),
        "models": {name: asdict(entry) for name, entry in index.models.items()},
        "dates": {"first": dates[0] if dates else None, "last": dates[-1] if dates else None},
        "archives": index.archives,
        "created_at": index.created_at,
    }


def render_info(console: Console, index: Index, doc: dict[str, Any] | None = None) -> None:
    doc = doc or info_document(index)
    console.print(f"[bold]{markup_safe(doc['index'])}[/bold]: {doc['photos']} photos, "
                  f"built {markup_safe(doc['created_at'])}")
    kinds = Table("kind", "photos", box=None, header_style="dim")
    for kind, count in doc["kinds"].items():
        kinds.add_row(Text(visible(kind)), str(count))
    console.print(kinds)
    models = Table("model", "dim", "precision", "threshold", "weights SHA-256", "weights file",
                   box=None, header_style="dim")
    for name, entry in index.models.items():
        if name not in doc["models"]:
            continue
        threshold = f"{entry.threshold:g} (calibrated)" if entry.threshold else "default"
        models.add_row(Text(visible(name)), str(entry.dim), Text(visible(entry.precision)),
                       threshold, Text(visible(entry.weights_sha256[:16] + "…")),
                       Text(visible(entry.weights_path)))
    console.print(models)
    if doc["dates"]["first"]:
        console.print(Text(f"dates: {visible(doc['dates']['first'][:10])} to "
                           f"{visible(doc['dates']['last'][:10])}"))
    for archive in index.archives:
        console.print(Text(f"archive: {visible(archive)}"))


# -- dupes ---------------------------------------------------------------------------


def dupes_document(model: str, threshold: float, groups: list[DuplicateGroup]
                   ) -> dict[str, Any]:
    return {"model": model, "threshold": threshold, "groups": [
        {"evidence": g.evidence, "score": round(g.score, 6),
         "photos": [{"path": p.path, "kind": p.kind, "taken_at": p.taken_at,
                     "caption": p.caption} for p in g.photos]} for g in groups]}


def render_dupes(console: Console, model: str, threshold: float,
                 groups: list[DuplicateGroup]) -> None:
    if not groups:
        console.print("No photo appears twice in the archive.")
    for n, group in enumerate(groups, 1):
        style = VERDICT_STYLE.get(group.evidence, "")
        console.print(Text.assemble((f"group {n}: ", "bold"), (group.evidence, style),
                                    f", cosine up to {group.score:.3f}, "
                                    f"{len(group.photos)} photos"))
        table = Table(box=None, pad_edge=False, header_style="dim")
        table.add_column("kind", no_wrap=True)
        table.add_column("date", no_wrap=True)
        table.add_column("caption / path", overflow="fold", ratio=1)
        for p in group.photos:
            where = Text(shorten(p.caption) or "(no caption)", style="" if p.caption else "dim")
            where.append("\n" + visible(p.path), style="dim")
            table.add_row(Text(visible(p.kind)), Text(visible((p.taken_at or "")[:10])), where)
        console.print(table)
        console.print()
    similar = "off" if threshold >= 1.0 else f"cosine >= {threshold:g}"
    console.print(f"[dim]model {model}; similar: {similar}; near-identical: PDQ <= 31; "
                  f"re-framed: local features verified geometrically[/dim]")


# -- stats ---------------------------------------------------------------------------


def _histogram_table(title: str, counts: np.ndarray, edges: np.ndarray, threshold: float,
                     width: int = 40) -> Table:
    table = Table(title=title, box=None, show_header=False, title_justify="left")
    table.add_column(justify="right", no_wrap=True)
    table.add_column(no_wrap=True)
    table.add_column(justify="right", no_wrap=True)
    peak = max(int(counts.max(initial=0)), 1)
    for count, low, high in zip(counts, edges[:-1], edges[1:], strict=True):
        bar = "█" * int(round(width * count / peak)) or ("▏" if count else "")
        style = "yellow" if high > threshold else "cyan"
        table.add_row(f"{low:.3f}-{high:.3f}", Text(bar, style=style), str(int(count)))
    return table


def render_stats(console: Console, stats: SimilarityStats) -> None:
    doc = stats.document()
    console.print(f"[bold]{stats.model}[/bold]: {doc['photos']} photos, {doc['pairs']} pairs"
                  f"{' (sampled)' if stats.sampled else ''}; threshold {stats.threshold:g} "
                  f"(bars above it in yellow)")
    pct = Table("", *[k for k in doc["nearest_neighbour"]], box=None, header_style="dim")
    for label, key in (("nearest neighbour", "nearest_neighbour"), ("all pairs", "all_pairs")):
        pct.add_row(label, *[f"{v:.3f}" for v in doc[key].values()])
    console.print(pct)
    for label, values in (("nearest neighbour", stats.nearest), ("all pairs", stats.pairs)):
        if len(values):
            counts, edges = stats.histogram(values)
            console.print(_histogram_table(label, counts, edges, stats.threshold))
    console.print()


def plot_stats(path: Path, all_stats: list[SimilarityStats]) -> None:
    """Nearest-neighbour and all-pairs histograms per model, side by side, threshold marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(all_stats), figsize=(5.5 * len(all_stats), 7),
                             squeeze=False)
    for col, stats in enumerate(all_stats):
        for row, (label, values) in enumerate((("nearest neighbour", stats.nearest),
                                               ("all pairs", stats.pairs))):
            ax = axes[row][col]
            if len(values):
                counts, edges = stats.histogram(values, bins=40)
                ax.stairs(counts, edges, fill=True, alpha=0.7)
            ax.axvline(stats.threshold, color="crimson", linestyle="--",
                       label=f"threshold {stats.threshold:g}")
            ax.set_title(f"{stats.model}: {label}")
            ax.set_xlabel("cosine similarity")
            ax.set_ylabel("photos" if row == 0 else "pairs")
            ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# -- calibrate -----------------------------------------------------------------------


def render_calibration(console: Console, results: list[Calibration]) -> None:
    for r in results:
        console.print(f"[bold]{r.model}[/bold]: {r.sampled} photos re-posted "
                      f"{len(r.positives)} ways; target precision {r.precision_target:g}")
        table = Table("threshold", "precision", "recall", box=None, header_style="dim")
        shown = [row for row in r.table if 0.0 < row.recall < 1.0 or row.precision < 1.0]
        for row in (shown or r.table)[::max(1, len(shown or r.table) // 15)]:
            mark = " ◀" if r.recommended is not None and row.threshold == r.recommended else ""
            table.add_row(f"{row.threshold:.3f}{mark}", f"{row.precision:.3f}",
                          f"{row.recall:.3f}")
        console.print(table)
        if r.recommended is None:
            console.print("[yellow]no threshold reaches the target precision[/yellow]")
        else:
            margin = f", margin {r.margin:.3f} above the highest negative below it" \
                if r.margin is not None else ""
            console.print(f"recommended threshold: [bold]{r.recommended:g}[/bold]{margin}")
        for line in r.skipped:
            console.print(f"[yellow]skipped:[/yellow] {markup_safe(line)}")
        console.print()
    edits = Table("edit", *[r.model for r in results], title="mean similarity of the edited "
                  "copy to its source", box=None, header_style="dim", title_justify="left")
    for name in results[0].by_edit if results else []:
        edits.add_row(name, *[f"{float(np.mean(r.by_edit[name])):.3f}" if r.by_edit[name]
                              else "-" for r in results])
    console.print(edits)
    for r in results:
        caught = Table("edit", EXACT, NEAR_IDENTICAL, REFRAMED, SIMILAR, "missed",
                       title=f"{r.model}: which evidence found each edited copy's source "
                       f"(similar at {r.threshold:g})", box=None, header_style="dim",
                       title_justify="left")
        for name, tally in r.caught.items():
            caught.add_row(name, *[str(tally.get(k, 0)) for k in
                                   (EXACT, NEAR_IDENTICAL, REFRAMED, SIMILAR, "missed")])
        console.print(caught)


# -- map -------------------------------------------------------------------------------


def map_document(amap: ArchiveMap, index: Index, files: dict[str, str]) -> dict[str, Any]:
    """`map --json`: where each photo sits, and the motifs."""
    from .photomap import NAME_NOTE

    return {
        "model": amap.model,
        "seed": amap.seed,
        "named_by": amap.named_by,
        "note": NAME_NOTE if amap.named_by else None,
        "points": [{"row": row, "x": round(float(x), 6), "y": round(float(y), 6),
                    "motif": int(amap.motif_of[row]), "path": p.path,
                    "taken_at": p.taken_at, "kind": p.kind}
                   for row, ((x, y), p) in enumerate(zip(amap.xy, index.photos, strict=True))],
        "motifs": [{"id": m.id, "name": m.name, "count": m.count, "labels": m.labels,
                    "photos": m.rows} for m in amap.motifs],
        "duplicate_groups": amap.duplicate_groups,
        "reframed_joined": amap.reframed_joined,
        "files": files,
    }


def render_map(console: Console, amap: ArchiveMap, files: dict[str, str]) -> None:
    from .photomap import NAME_NOTE

    photos, motifs = len(amap.xy), len(amap.motifs)
    console.print(Text.assemble((f"{photos} photo{'s' * (photos != 1)}", "bold"), " in ",
                                (f"{motifs} motif{'s' * (motifs != 1)}", "bold"),
                                f" ({amap.model}; {NAME_NOTE if amap.named_by else 'numbered'})"))
    for m in sorted(amap.motifs, key=lambda m: -m.count):
        console.print(Text.assemble(f"  {m.count:>6}  ", (m.name, "dim" if m.name == "other"
                                                          else "")))
    how = "re-framed pairs included" if amap.reframed_joined else "re-framed pairs not " \
        "looked for (--reframed)"
    console.print(f"  {len(amap.duplicate_groups)} group(s) of the same photo, joined by "
                  f"lines ({how})")
    for what, where in files.items():
        console.print(Text.assemble(f"{what}: ", (where, "bold")))
