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
    err.print(f"[bold red]error:[/bold red] {exc}", markup=True, highlight=False,
              soft_wrap=True)


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
    sys.exit(app())


from . import analysis, commands, mapping, serve  # noqa: E402,F401  (registers the commands on import)
