"""dupecheck serve | token create / list / revoke."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import UsageError
from .app import app, err, error_boundary, out
from .commands import _engines_for, _index_model, _weights_for
from .options import EngineName, IndexDir, ModelName, WeightsPath

ConfigDir = Annotated[Path | None, typer.Option(
    "--config", envvar="DUPECHECK_CONFIG", file_okay=False,
    help="Where tokens are kept (default: dupecheck's config dir).")]

token_app = typer.Typer(help="API tokens for `dupecheck serve`: create, list, revoke.",
                        no_args_is_help=True)
app.add_typer(token_app, name="token")


@token_app.command("create")
@error_boundary
def token_create(name: Annotated[str, typer.Argument(help="A name for the device.")],
                 config: ConfigDir = None) -> None:
    """Print a new token alone on stdout (T=$(dupecheck token create phone)); it is shown
    this once and stored only as its SHA-256."""
    from rich.markup import escape

    from ..tokens import TokenStore

    store = TokenStore(config)
    token = store.create(name)
    typer.echo(token)
    err.print(f"[dim]token {escape(name)} created; it is not shown again "
              f"({escape(str(store.path))})[/dim]")


@token_app.command("list")
@error_boundary
def token_list(config: ConfigDir = None) -> None:
    """Names, when created, when last used; never the secret."""
    from rich.markup import escape
    from rich.table import Table

    from ..tokens import TokenStore

    tokens = TokenStore(config).list()
    if not tokens:
        out.print("no tokens; create one with `dupecheck token create NAME`")
        return
    table = Table("name", "created", "last used", box=None, header_style="dim")
    for t in tokens:
        table.add_row(escape(t.name), t.created, t.last_used or "never")
    out.print(table)


@token_app.command("revoke")
@error_boundary
def token_revoke(name: Annotated[str, typer.Argument()], config: ConfigDir = None) -> None:
    """Revoke at once, also for a running server."""
    from rich.markup import escape

    from ..tokens import TokenStore

    TokenStore(config).revoke(name)
    out.print(f"revoked {escape(name)}")


@app.command()
@error_boundary
def serve(
    index_dir: IndexDir,
    host: Annotated[str, typer.Option("--host", help="Address to bind; loopback by default "
                                      "(reach it from the phone through `tailscale serve` "
                                      "or a TLS reverse proxy). Any other address needs "
                                      "--insecure-http.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535)] = 8765,
    model: ModelName = None,
    weights: WeightsPath = None,
    engine: EngineName = "auto",
    max_upload_mb: Annotated[int, typer.Option("--max-upload-mb", min=1, max=1024)] = 64,
    qr: Annotated[bool, typer.Option("--qr", help="Print a QR code that pairs a phone "
                                     "(single-use, for ten minutes).")] = False,
    public_url: Annotated[str | None, typer.Option(
        "--public-url", help="The https address the phone uses (e.g. your `tailscale "
        "serve` URL), for the QR code; its host name is answered.")] = None,
    allow_host: Annotated[list[str] | None, typer.Option(
        "--allow-host", help="Another host name to answer (repeatable). IP addresses, "
        "localhost and *.ts.net are always answered; any other name is refused, so that a "
        "web page cannot reach the service by DNS rebinding.")] = None,
    trust_proxy: Annotated[list[str] | None, typer.Option(
        "--trust-proxy", help="The address of a reverse proxy whose X-Forwarded-For is "
        "believed (repeatable); by default it is not, from anyone.")] = None,
    insecure_http: Annotated[bool, typer.Option(
        "--insecure-http", help="Allow plain HTTP beyond this computer (a non-loopback "
        "--host, or an http:// --public-url): tokens and photos then cross the network "
        "unencrypted.")] = False,
    config: ConfigDir = None,
) -> None:
    """A private service for checking from the phone: the page at /, the API at /api."""
    from urllib.parse import urlsplit

    import uvicorn
    from rich.markup import escape

    from ..engines.base import choose_engine
    from ..precision import engine_for
    from ..service import Pairing, ServiceState, create_app, is_loopback, server_config
    from ..store import open_index
    from ..tokens import TokenStore

    if not is_loopback(host) and not insecure_http:
        raise UsageError(f"--host {host} serves plain HTTP to the network; keep the "
                         "default 127.0.0.1 behind `tailscale serve` or a TLS proxy, or "
                         "add --insecure-http if you mean it")
    url = urlsplit(public_url) if public_url else None
    if url is not None and (url.scheme not in ("http", "https") or not url.hostname):
        raise UsageError(f"--public-url {public_url}: give an address like "
                         "https://box.tailnet.ts.net")
    if (url is not None and url.scheme == "http" and not is_loopback(url.hostname or "")
            and not insecure_http):
        raise UsageError(f"--public-url {public_url} is plain HTTP: use the https address "
                         "of `tailscale serve` or your TLS proxy, or add --insecure-http")
    wildcard = host in ("0.0.0.0", "::", "[::]")
    if qr and wildcard and url is None:
        raise UsageError(f"--qr with --host {host}: the phone cannot open {host}; give the "
                         "address it can reach with --public-url")
    tokens = TokenStore(config)
    if not tokens and not qr:
        raise UsageError("no API token exists: create one with `dupecheck token create "
                         "phone` (or start with --qr to pair a phone)")
    choose_engine(engine)
    index = open_index(index_dir)
    spec = _index_model(index, model)
    weights_path = _weights_for(index, spec, weights)
    entry = index.models[spec.name]
    warm = engine_for(index, spec, weights_path, engine)
    state = ServiceState(index_dir, spec, warm, entry.weights_sha256, tokens,
                         _engines_for(index, spec, weights_path, engine, warm))
    state.index()
    base = (public_url or f"http://{host}:{port}").rstrip("/")
    if qr:
        import segno

        state.pairing = Pairing.new()
        link = f"{base}/#pair={state.pairing.code}"
        segno.make(link, error="m").terminal(compact=True)
        err.print(f"scan to pair a phone (works once, for ten minutes): {escape(link)}")
    if insecure_http and (not is_loopback(host) or (url is not None and url.scheme == "http")):
        err.print("[yellow]warning: plain HTTP beyond this computer: anyone on the network "
                  "path can read tokens and photos[/yellow]")
    err.print(f"dupecheck serving {len(index)} photos at {escape(base)}/ "
              f"(API schema at {escape(base)}/openapi.json)")
    hosts = [*(allow_host or []), *([url.hostname] if url is not None and url.hostname else []),
             *([] if wildcard else [host])]
    app = create_app(state, max_upload_mb * 1024 * 1024, hosts)
    uvicorn.Server(server_config(app, host, port, trust_proxy)).run()
