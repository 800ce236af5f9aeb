"""dupecheck dupes | stats | calibrate | compare."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from ..errors import EXIT_OK, EXIT_POSTED, WeightsUnavailable
from .app import app, err, error_boundary, out
from .commands import _index_model, _progress, _weights_for
from .options import EngineName, IndexDir, JsonOut, ModelName, Quiet, Threshold, WeightsPath


@app.command()
@error_boundary
def dupes(
    index_dir: IndexDir,
    model: ModelName = None,
    weights: WeightsPath = None,
    threshold: Threshold = None,
    json_out: JsonOut = False,
    quiet: Quiet = False,
) -> None:
    """Photos posted more than once: groups of the same photo inside the archive."""
    from .. import report
    from ..analysis import find_duplicates
    from ..search import effective_threshold
    from ..store import open_index

    index = open_index(index_dir)
    spec = _index_model(index, model)
    entry = index.models[spec.name]
    if weights is not None:
        _weights_for(index, spec, weights)
    thr = effective_threshold(threshold, entry.threshold, spec.default_threshold)
    with _progress(quiet or json_out) as bar:
        task = bar.add_task("comparing", total=len(index))
        groups = find_duplicates(index, spec.name, thr,
                                 progress=lambda done, total: bar.update(task, completed=done))
    if json_out:
        out.print_json(data=report.dupes_document(spec.name, thr, groups))
    elif not quiet:
        report.render_dupes(out, spec.name, thr, groups)


@app.command()
@error_boundary
def stats(
    index_dir: IndexDir,
    model: ModelName = None,
    threshold: Threshold = None,
    plot: Annotated[Path | None, typer.Option(
        "--plot", dir_okay=False, help="Also draw the histograms into this PNG.")] = None,
    sample: Annotated[int, typer.Option(
        "--pairs", min=100, help="All-pairs cosines: sample this many when there are more."
    )] = 200_000,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    json_out: JsonOut = False,
) -> None:
    """The distribution of cosine similarities in the index, as histograms."""
    from .. import report
    from ..analysis import similarity_stats
    from ..engines import get_model_spec
    from ..search import effective_threshold
    from ..store import open_index

    index = open_index(index_dir)
    names = [_index_model(index, model).name] if model else sorted(index.models)
    results = []
    for name in names:
        spec = get_model_spec(name)
        entry = index.models[name]
        thr = effective_threshold(threshold, entry.threshold, spec.default_threshold)
        results.append(similarity_stats(index, name, thr, sample, seed))
    if plot is not None:
        report.plot_stats(plot, results)
    if json_out:
        out.print_json(data={"models": [r.document() for r in results],
                             **({"plot": str(plot)} if plot else {})})
    else:
        for r in results:
            report.render_stats(out, r)
        if plot is not None:
            out.print(f"[dim]plot written to {plot}[/dim]")


@app.command()
@error_boundary
def calibrate(
    index_dir: IndexDir,
    model: ModelName = None,
    weights: WeightsPath = None,
    engine: EngineName = "auto",
    precision: Annotated[float, typer.Option(
        "--precision", min=0.5, max=1.0, help="Precision the recommended threshold reaches."
    )] = 0.99,
    sample: Annotated[int, typer.Option("--sample", min=2,
                                        help="Archive photos to re-post.")] = 40,
    seed: Annotated[int, typer.Option("--seed", help="Same seed, same result.")] = 0,
    save: Annotated[bool, typer.Option(
        "--save/--no-save", help="Keep the recommended threshold in the index (the default): "
        "`check` and `serve` then use it unless given --threshold. --no-save only reports."
    )] = True,
    json_out: JsonOut = False,
) -> None:
    """Choose the threshold from your own photos: re-post a sample as people re-post, and
    measure precision and recall."""
    from .. import report
    from ..calibrate import calibrate as run_calibration
    from ..engines import get_model_spec
    from ..engines.base import choose_engine
    from ..precision import engine_for
    from ..search import effective_threshold
    from ..store import open_index, republish

    index = open_index(index_dir)
    choose_engine(engine)
    names = [_index_model(index, model).name] if model else sorted(index.models)
    results = []
    with _progress(json_out) as bar:
        for name in names:
            spec = get_model_spec(name)
            path = _weights_for(index, spec, weights if model else None)
            runner = engine_for(index, spec, path, engine)
            task = bar.add_task(f"{name}", total=min(sample, len(index)))
            in_force = effective_threshold(None, index.models[name].threshold,
                                           spec.default_threshold)
            results.append(run_calibration(
                index, spec, runner, sample=sample, precision=precision, seed=seed,
                threshold=in_force,
                progress=lambda done, total, t=task: bar.update(t, completed=done)))
    saved = {}
    if save:
        entries = dict(index.models)
        for r in results:
            if r.recommended is not None:
                entries[r.model] = replace(entries[r.model], threshold=r.recommended)
                saved[r.model] = r.recommended
        republish(index, entries)
    if json_out:
        out.print_json(data={"models": [r.document() for r in results], "saved": saved})
        return
    report.render_calibration(out, results)
    for name, value in saved.items():
        out.print(f"saved: `check` now uses {value:g} for {name} (an explicit --threshold "
                  f"still wins)")


def _box(transform: dict) -> str:
    x0, y0, x1, y1 = transform["box"]
    bx0, by0, bx1, by1 = transform["box_in_photo"]
    return (f"the part {x0:.2f}-{x1:.2f} x {y0:.2f}-{y1:.2f}, turned "
            f"{transform['rotation_deg']:+.1f} deg"
            f"{', mirrored' if transform['mirrored'] else ''}, scale "
            f"{transform['scale']:.2f}; B is the part {bx0:.2f}-{bx1:.2f} x {by0:.2f}-{by1:.2f} "
            f"of A")


@app.command()
@error_boundary
def compare(
    photo_a: Annotated[Path, typer.Argument(help="A photo.", show_default=False)],
    photo_b: Annotated[Path, typer.Argument(help="Another photo.", show_default=False)],
    model: ModelName = None,
    weights: WeightsPath = None,
    engine: EngineName = "auto",
    threshold: Threshold = None,
    json_out: JsonOut = False,
    quiet: Quiet = False,
) -> None:
    """Two photos, no index: every evidence and the verdict (exit codes as `check`)."""
    from rich.table import Table

    from .. import report
    from ..engines import DEFAULT_MODEL, MODELS, get_model_spec, load_engine
    from ..engines.base import choose_engine
    from ..engines.weights import resolve_weights
    from ..search import NEW, compare_photos, effective_threshold

    choose_engine(engine)
    names = [model] if model else sorted(n for n, s in MODELS.items() if s.weights)
    models = []
    unavailable = []
    for name in names:
        spec = get_model_spec(name)
        try:
            own = weights if name == (model or DEFAULT_MODEL) else None
            path = resolve_weights(spec, own, download=model is not None)
        except WeightsUnavailable as exc:
            if model:
                raise
            unavailable.append(f"{name}: {exc.reason}")
            continue
        thr = effective_threshold(threshold, None, spec.default_threshold)
        models.append((spec, load_engine(spec, path, engine), thr))
    result = compare_photos(photo_a, photo_b, models)
    if json_out:
        out.print_json(data={**vars(result), "unavailable": unavailable})
    elif not quiet:
        table = Table(show_header=False, box=None)
        table.add_row("same bytes", "yes" if result.same_bytes else "no")
        table.add_row("PDQ distance", f"{result.pdq_distance} ({result.pdq_variant})")
        table.add_row("local features", f"{result.inliers} inliers agree"
                      + (f": A is {_box(result.transform)} of B" if result.transform else ""))
        for name, cos in result.cosines.items():
            table.add_row(f"cosine {name}", f"{cos:.4f} (similar at >= "
                                            f"{result.thresholds[name]:g})")
        for line in unavailable:
            table.add_row("not compared", line)
        out.print(table)
        style = report.VERDICT_STYLE[result.verdict]
        out.print(f"verdict: [{style}]{result.verdict}[/{style}]")
    if unavailable and not quiet:
        err.print("[dim]no local weights for: " + ", ".join(u.split(':')[0] for u in unavailable)
                  + " (pass --model to download them)[/dim]")
    raise typer.Exit(EXIT_OK if result.verdict == NEW else EXIT_POSTED)
