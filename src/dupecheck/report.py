"""Results for people (Rich tables) and for programs (one JSON document on stdout)."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from .indexer import IndexSummary
from .search import EXACT, NEAR_IDENTICAL, NEW, SIMILAR, CheckResult
from .store import Index

CAPTION_WIDTH = 48
VERDICT_STYLE = {EXACT: "bold red", NEAR_IDENTICAL: "bold red", SIMILAR: "bold yellow",
                 NEW: "bold green"}
VERDICT_TEXT = {
    EXACT: "already posted: the very same file",
    NEAR_IDENTICAL: "already posted: the same photo, re-encoded or edited",
    SIMILAR: "probably posted: a very similar photo",
    NEW: "not posted yet",
}


def shorten(text: str | None, width: int = CAPTION_WIDTH) -> str:
    if not text:
        return ""
    line = " ".join(text.split())
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
                    }
                    for m in r.matches
                ],
            }
            for r in results
        ],
    }


def render_check(console: Console, model: str, threshold: float,
                 results: list[CheckResult]) -> None:
    for result in results:
        if result.verdict is None:
            continue  # its error line went to stderr
        style = VERDICT_STYLE[result.verdict]
        console.print(Text.assemble((result.photo, "bold"), ": ", (result.verdict, style),
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
            if m.evidence and m.variant != "full":
                evidence.append(f" ({m.variant})", style="dim")
            where = Text(shorten(m.photo.caption) or "(no caption)",
                         style="" if m.photo.caption else "dim")
            where.append("\n" + m.photo.path, style="dim")
            table.add_row(str(m.rank), f"{m.score:.3f}", str(m.pdq_distance), evidence, kind,
                          (m.photo.taken_at or "")[:10], where)
        console.print(table)
        console.print()
    similar = "off" if threshold >= 1.0 else f"cosine >= {threshold:g}"
    console.print(f"[dim]model {model}; similar: {similar}; near-identical: PDQ distance "
                  f"<= 31 of 256 bits[/dim]")


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
    console.print(f"[dim]layout {layouts}; index at {escape(summary.index)}[/dim]")
    for name in summary.dropped_models:
        console.print(f"[yellow]{name} embeddings dropped: they do not cover the new photos; "
                      f"run `dupecheck index ... --model {name}` to add them back[/yellow]")


# -- info ----------------------------------------------------------------------------


def info_document(index: Index) -> dict[str, Any]:
    dates = sorted(p.taken_at for p in index.photos if p.taken_at)
    return {
        "index": str(index.root),
        "photos": len(index.photos),
        "kinds": dict(Counter(p.kind for p in index.photos).most_common()),
        "models": {name: asdict(entry) for name, entry in index.models.items()},
        "dates": {"first": dates[0] if dates else None, "last": dates[-1] if dates else None},
        "archives": index.archives,
        "created_at": index.created_at,
    }


def render_info(console: Console, index: Index, doc: dict[str, Any] | None = None) -> None:
    doc = doc or info_document(index)
    console.print(f"[bold]{escape(doc['index'])}[/bold]: {doc['photos']} photos, "
                  f"built {doc['created_at']}")
    kinds = Table("kind", "photos", box=None, header_style="dim")
    for kind, count in doc["kinds"].items():
        kinds.add_row(kind, str(count))
    console.print(kinds)
    models = Table("model", "dim", "threshold", "weights SHA-256", "weights file", box=None,
                   header_style="dim")
    for name, entry in index.models.items():
        if name not in doc["models"]:
            continue
        threshold = f"{entry.threshold:g} (calibrated)" if entry.threshold else "default"
        models.add_row(name, str(entry.dim), threshold, entry.weights_sha256[:16] + "…",
                       escape(entry.weights_path))
    console.print(models)
    if doc["dates"]["first"]:
        console.print(f"dates: {doc['dates']['first'][:10]} to {doc['dates']['last'][:10]}")
    for archive in index.archives:
        console.print(f"archive: {escape(archive)}")
