"""dupecheck index | check | info."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from .. import report
from ..archive import Archive
from ..engines import DEFAULT_MODEL, ModelSpec, get_model_spec, load_engine
from ..engines.base import choose_engine
from ..engines.weights import file_sha256, resolve_weights
from ..errors import (
    EXIT_OK,
    EXIT_POSTED,
    EXIT_USAGE,
    IndexUnusable,
    UsageError,
    WeightsUnavailable,
)
from ..evidence import sha256_bytes
from ..search import DEFAULT_TOP_K, NEW, check_photos, effective_threshold
from ..store import Index, NotMatches, open_index
from .app import app, err, error_boundary, out
from .options import (
    EngineName,
    IndexDir,
    JsonOut,
    ModelName,
    Quiet,
    Threshold,
    WeightsPath,
)


def _progress(quiet: bool) -> Progress:
    return Progress(TextColumn("{task.description:<10}"), BarColumn(), MofNCompleteColumn(),
                    TimeRemainingColumn(), console=err, transient=True,
                    disable=quiet or not err.is_terminal)


@app.command()
@error_boundary
def index(
    archives: Annotated[list[Path], typer.Argument(
        help="The export: its zip(s) (all parts of a split export) or folder(s); "
             "or a plain folder of photos.", show_default=False)],
    index_dir: IndexDir,
    model: ModelName = None,
    weights: WeightsPath = None,
    rebuild: Annotated[bool, typer.Option(
        "--rebuild", help="Start this index anew instead of refusing a mismatched one.")] = False,
    engine: EngineName = "auto",
    json_out: JsonOut = False,
    quiet: Quiet = False,
) -> None:
    """Index an Instagram export: the index then holds exactly these archives' photos."""
    spec = get_model_spec(model or DEFAULT_MODEL)
    choose_engine(engine)
    Archive(archives).close()  # unreadable archives are bad usage (2), before any weights (3)
    weights_path = resolve_weights(spec, weights)
    with _progress(quiet or json_out) as bar:
        tasks: dict[str, int] = {}

        def on_progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done)

        from ..indexer import build_index

        summary = build_index(archives, index_dir, spec, weights_path, rebuild=rebuild,
                              engine=engine, progress=on_progress)
    for line in summary.errors:
        err.print(f"[yellow]skipped:[/yellow] {line}", highlight=False, markup=True,
                  soft_wrap=True)
    if json_out:
        out.print_json(data=report.index_document(summary))
    elif not quiet:
        report.render_index_summary(out, summary)


def _index_model(index: Index, model: str | None) -> ModelSpec:
    if model:
        return get_model_spec(model)
    if not index.models:
        raise IndexUnusable("the index holds no embeddings", index.root)
    name = DEFAULT_MODEL if DEFAULT_MODEL in index.models else sorted(index.models)[0]
    return get_model_spec(name)


def _weights_for(index: Index, spec: ModelSpec, weights: Path | None) -> Path:
    """The weights the index was built with, verified by SHA-256."""
    entry = index.models.get(spec.name)
    if entry is None:
        index.embeddings(spec.name)  # raises the clear "holds no ... embeddings" error
        raise AssertionError
    path = resolve_weights(spec, weights, Path(entry.weights_path))
    sha = file_sha256(path)
    if sha != entry.weights_sha256:
        raise WeightsUnavailable(
            f"not the weights this index was built with (SHA-256 {sha[:12]}..., the index "
            f"has {entry.weights_sha256[:12]}...); pass those with --weights, or re-index", path)
    if entry.preprocessing != spec.preprocessing:
        raise IndexUnusable(f"the index's {spec.name} embeddings used other preprocessing "
                            f"({entry.preprocessing}); re-index with --rebuild", index.root)
    return path


@app.command()
@error_boundary
def check(
    photos: Annotated[list[Path], typer.Argument(help="Photos to check.", show_default=False)],
    index_dir: IndexDir,
    top_k: Annotated[int, typer.Option("--top-k", "-k", min=1,
                                       help="Archive photos to list per photo.")] = DEFAULT_TOP_K,
    threshold: Threshold = None,
    model: ModelName = None,
    weights: WeightsPath = None,
    engine: EngineName = "auto",
    html_report: Annotated[Path | None, typer.Option(
        "--report", dir_okay=False, help="Write a self-contained HTML page: each photo beside "
        "its matches.")] = None,
    sheet: Annotated[Path | None, typer.Option(
        "--sheet", dir_okay=False, help="Write the same as one contact-sheet PNG.")] = None,
    not_match: Annotated[list[str] | None, typer.Option(
        "--not", metavar="ARCHIVE_PATH", help="Remember that these photos are not re-posts "
        "of this archive photo (its path as shown); later checks skip the pair.")] = None,
    json_out: JsonOut = False,
    quiet: Quiet = False,
) -> None:
    """Check photos against the index. Exit 0: all new; 1: some already posted."""
    if threshold is not None:
        effective_threshold(threshold, None, 1.0)  # bad usage before any work
    choose_engine(engine)
    index = open_index(index_dir)
    spec = _index_model(index, model)
    weights_path = _weights_for(index, spec, weights)
    entry = index.models[spec.name]
    thr = effective_threshold(threshold, entry.threshold, spec.default_threshold)
    remembered = NotMatches(index.root)
    if not_match:
        _remember_not_matches(index, remembered, photos, not_match)
    # The model loads in a thread while the photos decode and the index is verified.
    with ThreadPoolExecutor(max_workers=1) as pool:
        loading = pool.submit(load_engine, spec, weights_path, engine, entry.weights_sha256)
        results = check_photos(photos, index, spec, loading.result, thr, top_k,
                               remembered.load())
    for r in results:
        if r.error:
            err.print(f"[bold red]error:[/bold red] {r.error}", highlight=False, soft_wrap=True)
    if json_out:
        out.print_json(data=report.check_document(spec.name, thr, results))
    elif not quiet:
        report.render_check(out, spec.name, thr, results, local=index.local is not None)
    if html_report or sheet:
        from .. import visual

        if html_report:
            visual.write_html(html_report, index, spec.name, thr, results)
        if sheet:
            visual.write_sheet(sheet, index, results)
    code = EXIT_OK
    if any(r.verdict not in (None, NEW) for r in results):
        code = EXIT_POSTED
    if any(r.error for r in results):
        code = EXIT_USAGE
    raise typer.Exit(code)


def _remember_not_matches(index: Index, remembered: NotMatches, photos: list[Path],
                          archive_paths: list[str]) -> None:
    by_path = {p.path: p.sha256 for p in index.photos}
    unknown = [p for p in archive_paths if p not in by_path]
    if unknown:
        raise UsageError(f"--not {unknown[0]}: no such photo in the index (use the archive "
                         f"path `check` shows)")
    targets = {by_path[p] for p in archive_paths}
    for photo in photos:
        try:
            remembered.add(sha256_bytes(photo.read_bytes()), targets)
        except OSError as exc:
            raise UsageError(f"{photo}: {exc.strerror or exc}") from exc


@app.command()
@error_boundary
def info(
    index_dir: IndexDir,
    model: ModelName = None,
    weights: WeightsPath = None,
    json_out: JsonOut = False,
) -> None:
    """What the index holds: photos by kind, models and weights, dates, archives.

    With --weights, also says whether that file is the one the index was built with."""
    index = open_index(index_dir)
    doc = report.info_document(index)
    if model is not None:
        spec = _index_model(index, model)
        doc["models"] = {k: v for k, v in doc["models"].items() if k == spec.name}
    if weights is not None:
        spec = _index_model(index, model)
        entry = index.models.get(spec.name)
        doc["weights_match"] = bool(entry and file_sha256(weights) == entry.weights_sha256)
    if json_out:
        out.print_json(data=doc)
        return
    report.render_info(out, index, doc)
    if "weights_match" in doc:
        verdict = "[green]match[/green]" if doc["weights_match"] else "[red]do not match[/red]"
        out.print(f"{weights}: {verdict} the weights of this index")
