"""dupecheck index | check | info."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ..defaults import DEFAULT_TOP_K
from ..errors import (
    EXIT_OK,
    EXIT_POSTED,
    EXIT_USAGE,
    IndexUnusable,
    UsageError,
    WeightsUnavailable,
)
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

if TYPE_CHECKING:
    from rich.progress import Progress

    from ..engines import ModelSpec
    from ..store import Index, NotMatches

# The library is imported inside each command, when it runs: the CLI itself loads in a
# fraction of the time, and a cold `check` opens its index and starts its model before it
# imports what the search and the report need.


def _progress(quiet: bool) -> Progress:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

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
    precision: Annotated[str, typer.Option(
        "--precision", help="fp32, or int8 (resnet50 or efficientnet-lite0 on the ONNX "
        "engine: quantized on a sample of your photos, used only if it follows fp32 on "
        "them, else fp32 and why)."
    )] = "fp32",
    json_out: JsonOut = False,
    quiet: Quiet = False,
) -> None:
    """Index an Instagram export: the index then holds exactly these archives' photos."""
    from .. import report
    from ..archive import Archive
    from ..engines import DEFAULT_MODEL, get_model_spec
    from ..engines.base import choose_engine
    from ..engines.weights import resolve_weights
    from ..precision import check_precision

    spec = get_model_spec(model or DEFAULT_MODEL)
    choose_engine(engine)
    check_precision(spec, precision, engine)
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
                              engine=engine, progress=on_progress, precision=precision)
    from ..report import markup_safe

    for line in summary.errors:
        err.print(f"[yellow]skipped:[/yellow] {markup_safe(line)}", highlight=False,
                  markup=True, soft_wrap=True)
    for path in summary.added_without_copy:
        err.print(f"[yellow]kept:[/yellow] {markup_safe(path)}: its copy in added/ is gone or "
                  "changed; the photo stays in the index, found by its exact bytes and PDQ "
                  "hash (add it again to embed it)", highlight=False, soft_wrap=True)
    if json_out:
        out.print_json(data=report.index_document(summary))
    elif not quiet:
        report.render_index_summary(out, summary)


def _index_model(index: Index, model: str | None) -> ModelSpec:
    from ..engines import DEFAULT_MODEL, get_model_spec

    if model:
        return get_model_spec(model)
    if not index.models:
        raise IndexUnusable("the index holds no embeddings", index.root)
    name = DEFAULT_MODEL if DEFAULT_MODEL in index.models else sorted(index.models)[0]
    return get_model_spec(name)


def _weights_for(index: Index, spec: ModelSpec, weights: Path | None) -> Path:
    """The weights the index was built with, verified by SHA-256."""
    from ..engines.weights import file_sha256, resolve_weights

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
    photos: Annotated[list[Path], typer.Argument(
        help="Photos to check, or folders of them (every photo inside, recursively).",
        show_default=False)],
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
    add: Annotated[bool, typer.Option(
        "--add", help="Then record the photos found new as posted now (as `dupecheck add`): "
        "check, and remember it if you go ahead.")] = False,
    json_out: JsonOut = False,
    quiet: Quiet = False,
) -> None:
    """Check photos against the index. Exit 0: all new; 1: some already posted."""
    from ..engines.base import choose_engine
    from ..precision import engine_for
    from ..store import NotMatches, open_index

    if threshold is not None:
        from ..search import effective_threshold

        effective_threshold(threshold, None, 1.0)  # bad usage before any work
    choose_engine(engine)
    photos = _photos_in(photos)
    index = open_index(index_dir)
    if index.local is not None:  # OpenCV, FAISS, the shortlist: while the rest loads
        index.local.prefetch()
    spec = _index_model(index, model)
    weights_path = _weights_for(index, spec, weights)
    # The model loads in a thread while the rest imports, the photos decode and the index
    # is verified.
    with ThreadPoolExecutor(max_workers=1) as pool:
        loading = pool.submit(engine_for, index, spec, weights_path, engine)
        from .. import report
        from ..search import NEW, check_photos, effective_threshold

        entry = index.models[spec.name]
        thr = effective_threshold(threshold, entry.threshold, spec.default_threshold)
        remembered = NotMatches(index.root)
        if not_match:
            _remember_not_matches(index, remembered, photos, not_match)
        with _progress(quiet or json_out or len(photos) < 8) as bar:
            task = bar.add_task("checking", total=len(photos))
            results = check_photos(photos, index, spec, loading.result, thr, top_k,
                                   remembered.load(), progress=lambda done, total: bar.update(
                                       task, completed=done))
    for r in results:
        if r.error:
            err.print(f"[bold red]error:[/bold red] {report.markup_safe(r.error)}", highlight=False,
                      soft_wrap=True)
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
    new = [Path(r.photo) for r in results if r.verdict == NEW]
    if add and new:
        from ..added import add_photos

        engines = _engines_for(index, spec, weights_path, engine, loading.result())
        summary = add_photos(index.root, new, engines)
        if not quiet:
            err.print(f"added {len(summary.added)} new photo(s) to the index as posted now"
                      + (f"; {len(summary.already)} already there" if summary.already else ""))
    code = EXIT_OK
    if any(r.verdict not in (None, NEW) for r in results):
        code = EXIT_POSTED
    if any(r.error for r in results):
        code = EXIT_USAGE
    raise typer.Exit(code)


def _photos_in(paths: list[Path]) -> list[Path]:
    """Folders expand to the photos inside; what is skipped there is said, one line each."""
    if not any(p.is_dir() for p in paths):
        return paths
    from ..added import collect_photos
    from ..report import markup_safe

    found, skipped = collect_photos(paths)
    for line in skipped:
        err.print(f"[yellow]skipped:[/yellow] {markup_safe(line)}",
                  highlight=False, soft_wrap=True)
    if not found:
        raise UsageError("no photo found in " + ", ".join(str(p) for p in paths))
    return found


def _engines_for(index: Index, spec: ModelSpec, weights: Path, engine: str,
                 ready: object | None = None) -> dict[str, tuple[ModelSpec, object]]:
    """A loader per model of the index (each with the weights it was built with)."""
    from ..engines import get_model_spec
    from ..precision import engine_for

    engines: dict[str, tuple[ModelSpec, object]] = {}
    for name in index.models:
        model_spec = get_model_spec(name)
        if name == spec.name:
            path = weights
        else:
            path = _weights_for(index, model_spec, None)
        if name == spec.name and ready is not None:
            engines[name] = (model_spec, lambda r=ready: r)
        else:
            engines[name] = (model_spec, lambda s=model_spec, p=path: engine_for(
                index, s, p, engine))
    return engines


@app.command()
@error_boundary
def add(
    photos: Annotated[list[Path], typer.Argument(
        help="Photos you posted since the export, or folders of them.", show_default=False)],
    index_dir: IndexDir,
    caption: Annotated[str | None, typer.Option("--caption", help="Their caption.")] = None,
    date: Annotated[str | None, typer.Option(
        "--date", metavar="YYYY-MM-DD", help="When they were posted (default: the photo's "
        "EXIF date, else today).")] = None,
    model: ModelName = None,
    weights: WeightsPath = None,
    engine: EngineName = "auto",
    json_out: JsonOut = False,
    quiet: Quiet = False,
) -> None:
    """Record photos as posted now, until an export that holds them is indexed."""
    from .. import report
    from ..added import add_photos, parse_date
    from ..engines.base import choose_engine
    from ..report import markup_safe
    from ..store import open_index

    parse_date(date)  # bad usage before any work
    choose_engine(engine)
    photos = _photos_in(photos)
    index = open_index(index_dir)
    spec = _index_model(index, model)
    weights_path = _weights_for(index, spec, weights)
    engines = _engines_for(index, spec, weights_path, engine)
    with _progress(quiet or json_out or len(photos) < 8) as bar:
        task = bar.add_task("adding", total=len(photos))
        summary = add_photos(index.root, photos, engines, caption, date,
                             progress=lambda done, total: bar.update(task, completed=done))
    for line in summary.errors:
        err.print(f"[bold red]error:[/bold red] {markup_safe(line)}",
                  highlight=False, soft_wrap=True)
    if json_out:
        out.print_json(data=report.add_document(summary))
    elif not quiet:
        report.render_add(out, summary)
    if summary.errors and not summary.added and not summary.already:
        raise typer.Exit(EXIT_USAGE)


@app.command()
@error_boundary
def remove(
    paths: Annotated[list[str], typer.Argument(
        metavar="ARCHIVE_PATH...", help="Added photos to take out: the path `check` shows, "
        "or the file itself.", show_default=False)],
    index_dir: IndexDir,
    json_out: JsonOut = False,
    quiet: Quiet = False,
) -> None:
    """Take photos recorded with `add` out of the index again (an export's photos stay)."""
    from ..added import remove_photos

    summary = remove_photos(index_dir, paths)
    if json_out:
        out.print_json(data={"index": summary.index, "removed": summary.removed,
                             "photos": summary.photos})
    elif not quiet:
        out.print(f"removed {len(summary.removed)} added photo(s); the index holds "
                  f"{summary.photos} photos")


def _remember_not_matches(index: Index, remembered: NotMatches, photos: list[Path],
                          archive_paths: list[str]) -> None:
    from ..evidence import sha256_bytes

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
    from .. import report
    from ..engines.weights import file_sha256
    from ..store import open_index

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
