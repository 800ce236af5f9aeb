"""Write the documentation pages made from the code and the saved runs, never by hand.

    python scripts/gen_docs.py            write docs/reference.md and docs/speed.md
    python scripts/gen_docs.py --check    exit 1 if either differs from what it would write

docs/reference.md: every command and option, from the Typer app itself (so an option
cannot be missing or stale). docs/speed.md: one section per benchmark, the latest saved
run of it under benchmarks/ (its file named), older runs left there.
tests/test_docs.py fails when a checked-in page differs from what this writes.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

REFERENCE = REPO / "docs" / "reference.md"
SPEED = REPO / "docs" / "speed.md"
BENCHMARKS = REPO / "benchmarks"
# date-family[-N]: N counts the runs of a day (1-2 digits; "candidate-384" is a name)
RUN_NAME = re.compile(r"^(?P<date>\d{4}-\d{2}-\d{2})-(?P<family>.+?)(?:-(?P<n>\d{1,2}))?$")


def _plain(text: str | None) -> str:
    """Help text as one Markdown paragraph (Rich markup and Typer's line breaks gone)."""
    text = re.sub(r"\[/?[a-z ]+\]", "", text or "")
    return " ".join(text.split())


def _option_rows(command, ctx) -> list[str]:  # noqa: ANN001 - click objects
    rows = []
    for param in command.get_params(ctx):
        if getattr(param, "hidden", False):
            continue
        if param.param_type_name == "argument":
            name = f"`{param.human_readable_name}`"
            kind = "argument" + (" (one or more)" if param.nargs == -1 else "")
        else:
            names = [*param.opts, *param.secondary_opts]
            name = ", ".join(f"`{n}`" for n in names)
            kind = "flag" if param.is_flag else (param.make_metavar(ctx)
                                                 if hasattr(param, "make_metavar") else "")
        default = param.default
        shown = "" if default in (None, False, (), []) or callable(default) else f"`{default}`"
        envvar = getattr(param, "envvar", None)
        env = f" (env `{envvar}`)" if isinstance(envvar, str) else ""
        help_text = _plain(getattr(param, "help", "")) + env
        kind = f"`{kind}`" if kind and kind not in ("flag",) and not kind.startswith(
            "argument") else kind
        rows.append(f"| {name} | {kind.replace('|', '/')} | {shown} | "
                    f"{help_text.replace('|', '/')} |")
    return rows


def reference() -> str:
    import typer

    from dupecheck.cli import app

    root = typer.main.get_command(app)
    context = type(root.make_context("dupecheck", ["--help"], resilient_parsing=True))
    out = ["# Reference", "",
           "Every command and option, written from the command-line app itself by "
           "`scripts/gen_docs.py` (`dupecheck COMMAND --help` says the same). For what "
           "the commands do and why, see [Commands](commands.md), [The phone](phone.md) "
           "and [The map](map.md).", ""]

    def walk(command, path: list[str]) -> None:  # noqa: ANN001 - a click command
        ctx = context(command, info_name=" ".join(path))
        if hasattr(command, "list_commands"):
            for name in command.list_commands(ctx):
                walk(command.get_command(ctx, name), [*path, name])
            return
        out.extend([f"## `{' '.join(path)}`", "", _plain(command.help), "",
                    f"```\n{command.get_usage(ctx).replace('Usage: ', '')}\n```", ""])
        rows = _option_rows(command, ctx)
        if rows:
            out.extend(["| option | takes | default | what |", "|---|---|---|---|", *rows,
                        ""])

    top = context(root, info_name="dupecheck")
    for name in root.list_commands(top):
        walk(root.get_command(top, name), ["dupecheck", name])
    return "\n".join(out).rstrip() + "\n"


def latest_runs() -> dict[str, Path]:
    """Each benchmark's latest saved run (.txt), by its name without date and counter."""
    latest: dict[str, tuple[tuple[str, int], Path]] = {}
    for path in BENCHMARKS.glob("*.txt"):
        match = RUN_NAME.match(path.stem)
        if match is None:
            continue
        key = (match["date"], int(match["n"] or 1))
        family = match["family"]
        if family not in latest or key > latest[family][0]:
            latest[family] = (key, path)
    return {family: path for family, (_, path) in sorted(latest.items())}


def speed() -> str:
    out = ["# Speed", "",
           "Written by `scripts/gen_docs.py` from the saved runs in `benchmarks/`: for each "
           "benchmark, its latest run as the script printed it. Each run compares side by "
           "side in one process tree (interleaved, a ratio to a named revision) and names "
           "its machine; older runs stay in `benchmarks/`. The scripts are in `scripts/` "
           "(`make bench`, `make bench-reframed`, `make load-serve`, and "
           "`scripts/bench_*.py`).", ""]
    for family, path in latest_runs().items():
        text = path.read_text(encoding="utf-8").rstrip()
        out.extend([f"## {family}", "", f"`benchmarks/{path.name}`", "",
                    "```text", text, "```", ""])
    return "\n".join(out).rstrip() + "\n"


PAGES = {REFERENCE: reference, SPEED: speed}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    stale = []
    for path, make in PAGES.items():
        text = make()
        if args.check:
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                stale.append(path.relative_to(REPO))
        else:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path.relative_to(REPO)}")
    if stale:
        print("stale: " + ", ".join(map(str, stale)) + " (run scripts/gen_docs.py)")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
