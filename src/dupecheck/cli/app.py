"""The Typer app, the error boundary, and two consoles: results on stdout, the rest on stderr."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from .. import __version__
from ..errors import DupecheckError

app = typer.Typer(
    name="dupecheck",
    help="Is this photo already on my Instagram? Index your exported archive once, "
         "then check photos against it before you post.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

out = Console(soft_wrap=False)
err = Console(stderr=True)
_state = {"debug": False}

F = TypeVar("F", bound=Callable[..., Any])


def report_error(exc: BaseException) -> None:
    from ..report import markup_safe

    # escaped: a file name or an install hint may hold [brackets] Rich would take as markup
    err.print(f"[bold red]error:[/bold red] {markup_safe(str(exc))}", markup=True,
              highlight=False, soft_wrap=True)


def error_boundary(func: F) -> F:
    """Translate library errors into one red line and the documented exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except DupecheckError as exc:
            if _state["debug"]:
                raise
            report_error(exc)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            err.print("interrupted; finished batches are kept and reused by the next run")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def _version(value: bool) -> None:
    if value:
        out.print(f"dupecheck {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    _state["debug"] = debug


def main() -> None:
    """The console script. A `check` ends without tearing the interpreter down: once its
    output is flushed and the atexit hooks have run, freeing the ONNX session, FAISS and
    every module one object at a time is work the operating system does at once when the
    process ends (~0.1 s of a cold check here, ad-hoc; tests/test_cli.py)."""
    from . import ends_fast

    if not ends_fast(sys.argv):
        sys.exit(app())
    try:
        app()
        code: object = 0
    except SystemExit as exc:
        code = exc.code
    if code is not None and not isinstance(code, int):
        sys.exit(code)  # a message to print: the usual way
    import atexit
    import os

    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (`| head`): nothing more to say
            pass
    atexit._run_exitfuncs()  # noqa: SLF001 - what a normal exit would run, then no teardown
    os._exit(code or 0)


from . import analysis, commands, mapping, serve  # noqa: E402,F401  (registers the commands on import)
