"""`dupecheck serve`: the same check, from the phone, as a private HTTP service.

FastAPI over the library `check` uses (no second code path): the index and the model
are loaded once and kept warm, a new index generation is picked up without a restart.
Private by design: every /api endpoint but the health check and pairing needs a bearer
token (stored hashed, compared in constant time). The token is checked by `Gate`, an ASGI
layer in front of the app, from the header alone: a request without a valid one is
answered before a byte of its body is read, after a delay that grows with its client's
failures; a valid token is never refused or slowed by anyone else's failures. Uploads
stream in under a size limit and are never kept; archive photos are only reachable as
thumbnails by row, so no path from a client touches the disk. Errors are JSON:
{"error": "..."}.
"""

from __future__ import annotations

import contextlib
import io
import ipaddress
import json
import logging
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import anyio
from fastapi import Depends, FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from . import report
from .defaults import DEFAULT_TOP_K
from .engines import Engine, ModelSpec
from .errors import DupecheckError
from .search import Searcher, Upload, check_photos, effective_threshold
from .store import CURRENT_FILE, Index, NotMatches, open_index
from .tokens import TokenStore

MAX_PHOTOS = 20  # per request
MAX_FORM_FIELDS = 4  # top_k, threshold, caption: a form with more is refused unparsed
THUMB_SIDE = 320
PAIRING_SECONDS = 600  # a pairing code works once, for ten minutes
CHECK_WORKERS = 2  # checks at once: the CPU's cores, not the thread pool's 40
# A photo the service decodes has at most this many pixels (a 48 MP phone photo fits);
# the CLI's limit is imaging.MAX_PIXELS. Keeps a worst-case decode near 200 MB.
SERVICE_MAX_PIXELS = 50_000_000

# Failed attempts (a wrong token or pairing code). Tokens and codes are too long to guess;
# this only makes trying slow. A client's first FREE_FAILURES are answered at once, then
# each waits FAILURE_DELAY_S, doubling per failure up to MAX_FAILURE_DELAY_S.
FREE_FAILURES = 5
FAILURE_DELAY_S = 0.5
MAX_FAILURE_DELAY_S = 10.0
FAILURE_MEMORY_S = 600  # a client's failures are forgotten after ten quiet minutes
FAILURE_CLIENTS = 4096  # clients remembered at most (the longest quiet forgotten first)
# Requests in flight at once. With a valid token, beyond MAX_OWNER_REQUESTS they wait
# their turn (bounds the memory that uploads and decodes take).
# Requests without a token that read a body (pairing: 1 KB at most, within
# STRANGER_BODY_S): beyond these, 503 at once. The page, its files and the health check
# are never counted (they read no body), nor are 401s waiting out their delay.
# No share per client: behind `tailscale serve` every stranger is the same client, the
# phone that is pairing too.
MAX_STRANGER_REQUESTS = 256
STRANGER_BODY_S = 5.0  # a stranger's body (a pairing: 1 KB at most) arrives in this time
MAX_WAITING_FAILURES = 1024  # 401s waiting out their delay (they hold no slot)
MAX_OWNER_REQUESTS = 8
MAX_REQUESTS_PER_TOKEN = 4  # one token's share: its slow uploads leave the others room
# A refusal answered before the body (401, 413, 503) reads and discards what is still
# coming, at most this much for this long, so that the client reads the answer.
LINGER_BYTES = 8 * 1024 * 1024
LINGER_S = 2.0
MAX_LINGERING = 64
TOKEN_SCOPE_KEY = "dupecheck.token"  # the token's name, set by Gate for the app below it
TOKEN_SECRET_KEY = "dupecheck.token.secret"  # the token itself: queued work asks again
ADD_LOCK_WAIT_S = 5.0  # an add behind a CLI writer (an `index` run) waits this, then 503
TOKEN_NEEDED = ("a valid token is needed: `Authorization: Bearer TOKEN` "
                "(`dupecheck token create NAME`)")

# Host names answered besides IP literals (a DNS-rebinding page always names its own
# host) and the names `serve` is told (--public-url, --allow-host): tailnet names under
# ts.net are issued by Tailscale, never by a page's owner.
LOOPBACK_HOSTS = ("localhost",)
TAILNET_SUFFIX = ".ts.net"


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


# Sent with every answer: no MIME sniffing of an answer into something runnable, and no
# page of ours named to another site in a Referer.
SECURITY_HEADERS = [(b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"no-referrer")]


MAX_PAIR_BYTES = 1024  # a pairing request is {"code": "..."}: nothing larger is parsed


class SecurityHeaders:
    """SECURITY_HEADERS on every HTTP answer (an ASGI wrapper: it touches no body)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Callable[[], Awaitable[dict]],
                       send: Callable[[dict], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(msg: dict) -> None:
            if msg["type"] == "http.response.start":
                names = {k.lower() for k, _ in msg.get("headers", [])}
                msg["headers"] = list(msg.get("headers", [])) + [
                    (k, v) for k, v in SECURITY_HEADERS if k not in names]
            await send(msg)

        await self.app(scope, receive, with_headers)


class BodyLimit:
    """413 for a request body over `max_bytes`: by its Content-Length when it says, and
    counted while it streams in when it does not (or lies), never after."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict, receive: Callable[[], Awaitable[dict]],
                       send: Callable[[dict], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        message = f"the upload is over the {self.max_bytes // (1024 * 1024)} MB limit"
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await linger(_error(413, message), scope, receive, send)  # read by every client
            return
        received = 0
        over = False  # the body went over the limit: whatever the app answers, it is 413
        answered = False

        async def limited() -> dict:
            nonlocal received, over
            if over:
                return {"type": "http.disconnect"}
            msg = await receive()
            if msg["type"] == "http.request":
                received += len(msg.get("body", b""))
                if received > self.max_bytes:
                    over = True  # stop reading here: the app sees the client gone
                    return {"type": "http.disconnect"}
            return msg

        async def replacing(msg: dict) -> None:
            nonlocal answered
            if not over:
                await send(msg)
            elif not answered:
                answered = True
                await _error(413, message)(scope, receive, send)

        try:
            await self.app(scope, limited, replacing)
        except Exception:
            if not over:
                raise
        if over and not answered:
            await _error(413, message)(scope, receive, send)


async def _pause(seconds: float) -> None:
    """A failed attempt's answer waits here (only that request: nothing else is held)."""
    if seconds > 0:
        await anyio.sleep(seconds)


class FailureLog:
    """Failed attempts per client, bounded: the delay each new failure waits."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clients: OrderedDict[str, tuple[int, float]] = OrderedDict()
        self._lock = threading.Lock()
        self._clock = clock

    def record(self, client: str) -> float:
        """Count a failure; the seconds its answer waits (0 for the first few)."""
        now = self._clock()
        with self._lock:
            count, last = self._clients.pop(client, (0, now))
            count = count + 1 if now - last < FAILURE_MEMORY_S else 1
            self._clients[client] = (count, now)  # the most recent last
            while self._clients:
                oldest, (_, when) = next(iter(self._clients.items()))
                if len(self._clients) <= FAILURE_CLIENTS and now - when < FAILURE_MEMORY_S:
                    break
                del self._clients[oldest]
        if count <= FREE_FAILURES:
            return 0.0
        return min(MAX_FAILURE_DELAY_S, FAILURE_DELAY_S * 2 ** (count - FREE_FAILURES - 1))

    def __len__(self) -> int:
        return len(self._clients)

    def clients(self) -> list[str]:
        with self._lock:
            return list(self._clients)


def host_allowed(host_header: str, names: Iterable[str]) -> bool:
    """Whether a request's Host names this server: an IP literal, localhost, a tailnet
    name, or a name `serve` was told. Anything else may be a DNS-rebinding page."""
    host = host_header.strip().lower()
    if host.startswith("["):  # [::1]:8765
        host = host[1:host.find("]")] if "]" in host else host
    elif host.count(":") == 1:
        host = host.rsplit(":", 1)[0]
    host = host.rstrip(".")
    if not host:
        return False
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    return (host in LOOPBACK_HOSTS or host.endswith(TAILNET_SUFFIX)
            or host in {n.lower().rstrip(".") for n in names})


class Gate:
    """In front of the app, from the request's headers alone (no body is read here):
    unknown Host names are refused (421); a valid bearer token passes, at most
    MAX_REQUESTS_PER_TOKEN of one token's and MAX_OWNER_REQUESTS in all at a time (the
    rest wait); a request to a token-only endpoint without one is answered 401 after its
    client's failure delay, holding no slot while it waits; requests without a valid
    token that read a body (pairing) are capped at MAX_STRANGER_REQUESTS in flight (503
    beyond), and their body must arrive within STRANGER_BODY_S. The page, its worker,
    manifest, icons, scripts and the health check read no body and are answered whoever
    holds the slots. A refusal to a client
    that is still sending its body is answered as nginx's lingering close does (see
    `linger`), so every client reads it."""

    PUBLIC = ("/api/health", "/api/pair")

    def __init__(self, app: Any, state: ServiceState, hosts: Iterable[str] | None) -> None:
        self.app = app
        self.state = state
        self.hosts = None if hosts is None else tuple(hosts)
        self.strangers = 0
        self.waiting_failures = 0
        self.lingering = 0
        self._owner_slots: anyio.Semaphore | None = None
        self._token_slots: dict[str, anyio.Semaphore] = {}

    def _needs_token(self, path: str) -> bool:
        return path.startswith("/api/") and path not in self.PUBLIC

    @staticmethod
    def _reads_no_body(scope: dict) -> bool:
        """The page and what it loads, and the health check: GETs that no stranger's
        requests can queue behind."""
        path = scope.get("path", "")
        return scope.get("method") in ("GET", "HEAD") and (
            not path.startswith("/api/") or path == "/api/health")

    async def refuse(self, response: Response, scope: dict,
                     receive: Callable[[], Awaitable[dict]],
                     send: Callable[[dict], Awaitable[None]]) -> None:
        """Answer without reading the body; lingering (bounded) when one is coming."""
        if not _has_body(scope) or self.lingering >= MAX_LINGERING:
            await response(scope, receive, send)
            return
        self.lingering += 1
        try:
            await linger(response, scope, receive, send)
        finally:
            self.lingering -= 1

    async def __call__(self, scope: dict, receive: Callable[[], Awaitable[dict]],
                       send: Callable[[dict], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        host = headers.get(b"host", b"").decode("latin-1")
        if self.hosts is not None and not host_allowed(host, self.hosts):
            await self.refuse(_error(421, "this server does not answer to that host name "
                                          "(start `dupecheck serve` with --allow-host NAME)"),
                              scope, receive, send)
            return
        scheme, _, token = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
        token = token.strip()
        name = None
        if scheme.lower() == "bearer" and token:
            try:
                name = self.state.tokens.verify(token)
            except DupecheckError as exc:  # a damaged token file: the log says where
                logging.getLogger("dupecheck.serve").error("tokens: %s", exc)
                await self.refuse(_error(503, "the server cannot answer now; its log says why"),
                                  scope, receive, send)
                return
        if name is not None:
            await self._as_owner(name, token, scope, receive, send)
            return
        scope.pop(TOKEN_SCOPE_KEY, None)
        scope.pop(TOKEN_SECRET_KEY, None)
        client = (scope.get("client") or ("?",))[0]
        if self._needs_token(scope.get("path", "")):
            await self._refused_after_delay(client, scope, receive, send)
        elif self._reads_no_body(scope):
            await self.app(scope, receive, send)
        else:
            await self._as_stranger(scope, receive, send)

    async def _as_owner(self, name: str, token: str, scope: dict,
                        receive: Callable[[], Awaitable[dict]],
                        send: Callable[[dict], Awaitable[None]]) -> None:
        scope[TOKEN_SCOPE_KEY] = name
        scope[TOKEN_SECRET_KEY] = token
        if self._owner_slots is None:
            self._owner_slots = anyio.Semaphore(MAX_OWNER_REQUESTS)
        mine = self._token_slots.setdefault(name, anyio.Semaphore(MAX_REQUESTS_PER_TOKEN))
        async with mine, self._owner_slots:  # one token never takes every owner's place
            if not self.state.tokens.still_valid(name, token):  # revoked while it waited
                await self.refuse(_error(401, TOKEN_NEEDED), scope, receive, send)
                return
            await self.app(scope, receive, send)

    async def _refused_after_delay(self, client: str, scope: dict,
                                   receive: Callable[[], Awaitable[dict]],
                                   send: Callable[[dict], Awaitable[None]]) -> None:
        """401 after the client's failure delay; the wait holds no slot of the page's or
        pairing's (only a count, MAX_WAITING_FAILURES, beyond which it is 503 at once)."""
        if self.waiting_failures >= MAX_WAITING_FAILURES:
            await self.refuse(_error(503, "too many requests at once; try again shortly",
                                     {"Retry-After": "1"}), scope, receive, send)
            return
        self.waiting_failures += 1
        try:
            await _pause(self.state.failures.record(client))
        finally:
            self.waiting_failures -= 1
        await self.refuse(_error(401, TOKEN_NEEDED), scope, receive, send)

    async def _as_stranger(self, scope: dict,
                           receive: Callable[[], Awaitable[dict]],
                           send: Callable[[dict], Awaitable[None]]) -> None:
        """Pairing and whatever else reads a body without a token: a bounded place, given
        back once the body is in (the answer's failure delay holds none), and a body
        deadline."""
        if self.strangers >= MAX_STRANGER_REQUESTS:
            await self.refuse(_error(503, "too many requests at once; try again shortly",
                                     {"Retry-After": "1"}), scope, receive, send)
            return
        self.strangers += 1
        held = True

        def give_back() -> None:
            nonlocal held
            if held:
                held = False
                self.strangers -= 1

        deadline = anyio.current_time() + STRANGER_BODY_S
        late = False

        async def timed_receive() -> dict:
            nonlocal late
            if not held:  # the body is in (or gone): nothing more to wait for
                return await receive()
            with anyio.move_on_after(max(0.0, deadline - anyio.current_time())) as waited:
                msg = await receive()
            if waited.cancelled_caught:
                late = True
                give_back()
                return {"type": "http.disconnect"}
            if msg["type"] != "http.request" or not msg.get("more_body", False):
                give_back()
            return msg

        async def answering(msg: dict) -> None:
            if not late:
                await send(msg)

        try:
            await self.app(scope, timed_receive, answering)
        finally:
            give_back()
        if late:
            await _error(408, f"the body did not arrive within {STRANGER_BODY_S:.0f} s")(
                scope, receive, send)


def _has_body(scope: dict) -> bool:
    """Whether a body is on its way (a client waiting for 100-continue sends none)."""
    headers = dict(scope.get("headers") or [])
    if b"100-continue" in headers.get(b"expect", b"").lower():
        return False
    length = headers.get(b"content-length", b"0").strip()
    return (not length.isdigit() or int(length) > 0
            or b"chunked" in headers.get(b"transfer-encoding", b"").lower())


async def linger(response: Response, scope: dict, receive: Callable[[], Awaitable[dict]],
                 send: Callable[[dict], Awaitable[None]]) -> None:
    """Send a refusal whole but keep the response open while the body that is still on
    its way is read and thrown away, at most LINGER_BYTES for LINGER_S, nothing parsed.
    A client that sends its whole body before reading (Python's urllib) would otherwise
    meet a connection reset, not the answer, when the socket closes with unread bytes."""
    sent_body = False

    async def holding(msg: dict) -> None:
        nonlocal sent_body
        if msg["type"] == "http.response.body" and not msg.get("more_body", False):
            msg = {**msg, "more_body": True}  # complete once the client has had its say
            sent_body = True
        await send(msg)

    await response(scope, receive, holding)
    if not sent_body:
        return
    drained = 0
    with anyio.move_on_after(LINGER_S):
        while drained <= LINGER_BYTES:
            msg = await receive()
            if msg["type"] != "http.request":
                break
            drained += len(msg.get("body", b""))
            if not msg.get("more_body", False):
                break
    await send({"type": "http.response.body", "body": b"", "more_body": False})


@dataclass
class Pairing:
    """A single-use, short-lived code the phone trades for a token (the QR code)."""

    code: str
    expires: float
    used: bool = False

    @classmethod
    def new(cls) -> Pairing:
        return cls(secrets.token_urlsafe(16), time.monotonic() + PAIRING_SECONDS)


@dataclass
class ServiceState:
    """The index, its searcher and the warm engine; reloaded when CURRENT changes."""

    index_dir: Path
    spec: ModelSpec
    engine: Engine
    weights_sha256: str
    tokens: TokenStore
    engines_for_add: dict[str, tuple[ModelSpec, Callable[[], Engine]]] | None = None
    pairing: Pairing | None = None
    _current: str = ""
    _index: Index | None = None
    _searcher: Searcher | None = None
    failures: FailureLog = field(default_factory=FailureLog)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def index(self) -> tuple[Index, Searcher]:
        pointer = (self.index_dir / CURRENT_FILE).read_text(errors="replace")
        with self._lock:
            if pointer != self._current or self._index is None or self._searcher is None:
                index = open_index(self.index_dir)
                entry = index.models.get(self.spec.name)
                if entry is None or entry.weights_sha256 != self.weights_sha256:
                    raise ApiError(503, "the index was rebuilt with other weights or without "
                                        f"{self.spec.name}; restart `dupecheck serve`")
                if index.local is not None:
                    index.local.prefetch()
                searcher = Searcher(index, self.spec.name)
                self._index, self._searcher, self._current = index, searcher, pointer
            return self._index, self._searcher

    def threshold(self, explicit: float | None) -> float:
        index, _ = self.index()
        entry = index.models[self.spec.name]
        return effective_threshold(explicit, entry.threshold, self.spec.default_threshold)


def _client(request: Request) -> str:
    return request.client.host if request.client else "?"


def _safe_name(name: str | None, n: int) -> str:
    """The uploaded file's own name, without any folder a client put in it."""
    base = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    base = "".join(c for c in base if c.isprintable())[:200].strip()
    return base or f"photo-{n}"


def packaged(name: str) -> bytes:
    """A file shipped inside the package (the page, its scripts, ONNX Runtime Web)."""
    return resources.files("dupecheck").joinpath(name).read_bytes()


def page_html() -> str:
    return packaged("page.html").decode("utf-8")


def page_csp(html: str) -> str:
    """The page's Content-Security-Policy: its one inline script allowed by its SHA-256
    (no other script runs, injected or not), no framing by another site, no base or form
    target elsewhere."""
    import base64
    import hashlib
    import re

    scripts = re.findall(r"<script>(.*?)</script>", html, flags=re.DOTALL)
    digests = [base64.b64encode(hashlib.sha256(s.encode()).digest()).decode() for s in scripts]
    script_src = " ".join(f"'sha256-{d}'" for d in digests) or "'none'"
    return ("default-src 'self'; img-src 'self' blob: data:; style-src 'self' 'unsafe-inline'; "
            f"script-src 'self' 'wasm-unsafe-eval' {script_src}; worker-src 'self'; "
            "manifest-src 'self'; "
            "frame-ancestors 'none'; base-uri 'none'; form-action 'self'")


APP_NAME = "dupecheck"
THEME_COLOUR = "#1f6feb"


def manifest() -> dict[str, Any]:
    """The web app manifest: the page installs from Safari's and Chrome's "Add to Home
    Screen" and opens standalone."""
    return {"name": "dupecheck: already on my Instagram?", "short_name": APP_NAME,
            "start_url": "/", "scope": "/", "display": "standalone",
            "background_color": "#fafafa", "theme_color": THEME_COLOUR,
            "icons": [{"src": f"/icon-{side}.png", "sizes": f"{side}x{side}",
                       "type": "image/png", "purpose": "any"} for side in ICON_SIDES]}


ICON_SIDES = (192, 512)
VENDORED = {"ort.wasm.min.js": "text/javascript", "ort-wasm-simd-threaded.mjs": "text/javascript",
            "ort-wasm-simd-threaded.wasm": "application/wasm", "LICENSE": "text/plain"}


def icon_png(side: int) -> bytes:
    """The app's icon, drawn: a blue rounded square holding a white check mark."""
    from PIL import Image, ImageDraw

    scale = 4  # drawn large, then reduced: smooth edges
    big = side * scale
    img = Image.new("RGBA", (big, big), (0, 0, 0, 0))
    draw = ImageDraw.Draw(img)
    draw.rounded_rectangle((0, 0, big - 1, big - 1), radius=big // 5, fill=THEME_COLOUR)
    points = [(0.27 * big, 0.52 * big), (0.44 * big, 0.69 * big), (0.75 * big, 0.33 * big)]
    draw.line(points, fill="white", width=big // 11, joint="curve")
    buf = io.BytesIO()
    img.resize((side, side), Image.Resampling.LANCZOS).save(buf, "PNG")
    return buf.getvalue()


def create_app(state: ServiceState, max_upload_bytes: int = 64 * 1024 * 1024,
               hosts: Iterable[str] | None = ()) -> Any:
    """The FastAPI application behind Gate (Host names, tokens, failure delays, requests
    in flight), the streaming body limit and SECURITY_HEADERS. `hosts`: the host names
    answered besides IP literals, localhost and tailnet names (None: any)."""
    # No /docs or /redoc: FastAPI's pages load Swagger UI and ReDoc from a CDN, on the
    # origin whose storage holds the phone's token. The schema stays at /openapi.json.
    app = FastAPI(title="dupecheck", version="1.0", docs_url=None, redoc_url=None,
                  form_limits={"max_files": MAX_PHOTOS, "max_fields": MAX_FORM_FIELDS},
                  description="Is this photo already on my Instagram? Private service: "
                              "every /api endpoint but /api/health and /api/pair needs "
                              "`Authorization: Bearer TOKEN` (`dupecheck token create "
                              "NAME`).")
    workers = anyio.CapacityLimiter(CHECK_WORKERS)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, exc.message)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for e in exc.errors():
            where = ".".join(str(x) for x in e.get("loc", ()) if x not in ("body", "query"))
            parts.append(f"{where}: {e.get('msg')}")
        return _error(422, "; ".join(parts) or "invalid request")

    @app.exception_handler(ClientDisconnect)
    async def _gone(request: Request, exc: ClientDisconnect) -> JSONResponse:
        return _error(400, "the request ended before its body did")  # no one reads it

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Logged for the owner; the caller, who may have no token, learns no path.
        logging.getLogger("dupecheck.serve").error("%s %s failed", request.method,
                                                   request.url.path, exc_info=exc)
        return _error(500, "the server could not answer; its log says why")

    @app.exception_handler(DupecheckError)
    async def _dupecheck_error(request: Request, exc: DupecheckError) -> JSONResponse:
        status = 503 if exc.exit_code == 3 else 400
        if TOKEN_SCOPE_KEY not in request.scope:  # a stranger: the why goes to the log
            logging.getLogger("dupecheck.serve").error("%s %s: %s", request.method,
                                                       request.url.path, exc)
            return _error(status, "the server cannot answer now; its log says why")
        return _error(status, str(exc))

    def authorise(request: Request) -> str:
        """The token's name, as Gate found it (Gate has already answered any request
        without a valid one; this is the second lock on the same door)."""
        name = request.scope.get(TOKEN_SCOPE_KEY)
        if name is None:
            raise ApiError(401, TOKEN_NEEDED)
        return str(name)

    def still_authorised(request: Request) -> None:
        """Work that waited its turn runs only while its token is still valid."""
        name, secret = request.scope.get(TOKEN_SCOPE_KEY), request.scope.get(TOKEN_SECRET_KEY)
        if name is None or secret is None or not state.tokens.still_valid(name, secret):
            raise ApiError(401, TOKEN_NEEDED)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        html = page_html()
        return HTMLResponse(html, headers={"Content-Security-Policy": page_csp(html),
                                           "Cache-Control": "no-store"})

    @app.get("/manifest.webmanifest", include_in_schema=False)
    def web_manifest() -> JSONResponse:
        return JSONResponse(manifest(), media_type="application/manifest+json",
                            headers={"Cache-Control": "no-cache"})

    icons = {side: icon_png(side) for side in ICON_SIDES}

    @app.get("/icon-{side}.png", include_in_schema=False)
    def icon(side: int) -> Response:
        if side not in icons:
            raise ApiError(404, "no such icon")
        return Response(icons[side], media_type="image/png",
                        headers={"Cache-Control": "public, max-age=86400"})

    @app.get("/offline.js", include_in_schema=False)
    def offline_script() -> Response:
        return Response(packaged("offline.js"), media_type="text/javascript",
                        headers={"Cache-Control": "no-cache"})

    @app.get("/vendor/onnxruntime-web/{name}", include_in_schema=False)
    def vendored(name: str) -> Response:
        """ONNX Runtime Web, from the package (npm's files, pinned; never a CDN)."""
        if name not in VENDORED:
            raise ApiError(404, "no such file")
        return Response(packaged(f"vendor/onnxruntime-web/{name}"), media_type=VENDORED[name],
                        headers={"Cache-Control": "public, max-age=86400"})

    @app.get("/sw.js", include_in_schema=False)
    def service_worker() -> Response:
        return Response(packaged("sw.js"), media_type="text/javascript",
                        headers={"Cache-Control": "no-cache", "Service-Worker-Allowed": "/"})

    @app.get("/api/health")
    def health() -> dict[str, Any]:
        index, _ = state.index()
        return {"status": "ok", "photos": len(index)}

    token = [Depends(authorise)]  # before the request is validated: 401 comes first

    @app.get("/api/info", dependencies=token)
    def info() -> dict[str, Any]:
        index, _ = state.index()
        return report.info_document(index)

    @contextlib.asynccontextmanager
    async def uploads(photo: list[UploadFile]) -> AsyncIterator[Callable[[], list[Upload]]]:
        """The uploads, read into memory only by the worker that checks them (`read()`,
        in its thread): requests waiting for a worker hold their parts where Starlette
        spooled them (over 1 MB, an unnamed temporary file), not as bytes."""
        if len(photo) > MAX_PHOTOS:
            raise ApiError(422, f"photo: at most {MAX_PHOTOS} photos a request")

        def read() -> list[Upload]:
            items = []
            for n, f in enumerate(photo, 1):
                f.file.seek(0)
                items.append(Upload(_safe_name(f.filename, n), f.file.read(),
                                    SERVICE_MAX_PIXELS))
            return items

        try:
            yield read
        finally:
            for f in photo:
                await f.close()

    @app.post("/api/check", dependencies=token)
    async def check(request: Request,
                    photo: Annotated[list[UploadFile], File(description="One or more photos.")],
                    top_k: Annotated[int, Form(ge=1, le=100)] = DEFAULT_TOP_K,
                    threshold: Annotated[float | None, Form(gt=0.0, le=1.0)] = None
                    ) -> JSONResponse:
        """Exactly the document of `dupecheck check --json`; `photo` is the file's name."""
        async with uploads(photo) as read:

            def run() -> dict[str, Any]:
                still_authorised(request)  # revoked while it waited for a worker: not run
                return checked(read(), threshold, top_k)

            doc = await anyio.to_thread.run_sync(run, limiter=workers)
        return JSONResponse(doc)

    def checked(items: list[Upload], threshold: float | None, top_k: int) -> dict[str, Any]:
        index, _ = state.index()
        thr = state.threshold(threshold)
        results = check_photos(items, index, state.spec, state.engine, thr, top_k,
                               NotMatches(state.index_dir).load())
        if all(r.error for r in results):
            raise ApiError(400, "; ".join(r.error or "" for r in results))
        return report.check_document(state.spec.name, thr, results)

    adding = anyio.Lock()  # adds from the service take turns here, holding no worker

    @app.post("/api/add", dependencies=token)
    async def add(request: Request, photo: Annotated[list[UploadFile], File()],
                  caption: Annotated[str | None, Form(max_length=2200)] = None
                  ) -> JSONResponse:
        """Record photos as posted now, as `dupecheck add` does. Adds at once take turns
        (each lands); one behind a CLI writer waits ADD_LOCK_WAIT_S, then 503."""
        if state.engines_for_add is None:
            raise ApiError(503, "adding is not available on this server")
        engines = state.engines_for_add
        async with uploads(photo) as read:

            def run() -> dict[str, Any]:
                from .added import add_photos

                still_authorised(request)  # revoked while it waited: nothing is written
                summary = add_photos(state.index_dir, read(), engines, caption,
                                     wait_s=ADD_LOCK_WAIT_S)
                if summary.errors and not summary.added and not summary.already:
                    raise ApiError(400, "; ".join(summary.errors))
                return report.add_document(summary)

            async with adding:
                return JSONResponse(await anyio.to_thread.run_sync(run, limiter=workers))

    @app.get("/api/thumb/{row}", responses={200: {"content": {"image/jpeg": {}}}},
             dependencies=token)
    def thumb(row: int) -> Response:
        """A small JPEG of the archive photo at this row of the index."""
        index, _ = state.index()
        if not 0 <= row < len(index):
            raise ApiError(404, f"no row {row} (the index has {len(index)} photos)")
        data = _thumbnail(index, row)
        if data is None:
            raise ApiError(404, "the archive this photo came from cannot be read now")
        return Response(data, media_type="image/jpeg",
                        headers={"Cache-Control": "no-store"})  # a revoke is final

    def offline_copy() -> Any:
        from .offline import build_copy

        index, _ = state.index()
        return build_copy(index, state.spec, state.threshold(None),
                          NotMatches(state.index_dir).load())

    def offline_model() -> Path | None:
        """The ONNX file the index's embeddings come from (int8 where it is int8)."""
        from .precision import onnx_model_file

        index, _ = state.index()
        path = onnx_model_file(state.spec, index.models[state.spec.name])
        return path if path.is_file() else None

    @app.get("/api/offline/info", dependencies=token)
    async def offline_info() -> JSONResponse:
        """What keeping a copy on the phone takes, before it is downloaded."""
        copy = await anyio.to_thread.run_sync(offline_copy, limiter=workers)
        model = offline_model()
        return JSONResponse({"generation": copy.generation, "photos": copy.photos,
                             "bytes": copy.bytes, "embeddings": copy.encoding,
                             "model_bytes": model.stat().st_size if model else None})

    @app.get("/api/offline", dependencies=token,
             responses={200: {"content": {"application/octet-stream": {}}}})
    async def offline() -> Response:
        """The phone's copy of the index (offline.py: header, embeddings, PDQ, SHA-256,
        thumbnails), streamed from the cache."""
        from starlette.responses import FileResponse

        copy = await anyio.to_thread.run_sync(offline_copy, limiter=workers)
        return FileResponse(copy.path, media_type="application/octet-stream",
                            headers={"Cache-Control": "no-store"})

    @app.get("/api/offline/model", dependencies=token,
             responses={200: {"content": {"application/octet-stream": {}}}})
    def offline_model_file() -> Response:
        """The model as ONNX, for ONNX Runtime Web on the phone."""
        from starlette.responses import FileResponse

        model = offline_model()
        if model is None:
            raise ApiError(404, f"{state.spec.name} has no ONNX model to keep on a phone")
        return FileResponse(model, media_type="application/octet-stream",
                            headers={"Cache-Control": "no-store"})

    @app.post("/api/pair")
    async def pair(request: Request) -> JSONResponse:
        """Trade the single-use code from the QR code for a token of this phone's own."""
        client = _client(request)
        body = b""
        async for chunk in request.stream():  # read no further than a pairing needs
            body += chunk
            if len(body) > MAX_PAIR_BYTES:
                raise ApiError(413, f"a pairing request is at most {MAX_PAIR_BYTES} bytes")
        try:
            doc = json.loads(body)
        except (ValueError, RecursionError) as exc:  # deep nesting is a client's error
            raise ApiError(400, 'the body must be JSON: {"code": "..."}') from exc
        code = str(doc.get("code", "")) if isinstance(doc, dict) else ""
        pairing = state.pairing
        ok = (pairing is not None and not pairing.used and time.monotonic() < pairing.expires
              and secrets.compare_digest(code.encode(), pairing.code.encode()))
        if not ok or pairing is None:
            await _pause(state.failures.record(client))
            raise ApiError(401, "this pairing code is wrong, used or expired; run "
                                "`dupecheck serve --qr` again")
        pairing.used = True
        name = "paired-" + time.strftime("%Y%m%d-%H%M%S")
        return JSONResponse({"token": state.tokens.create(name), "name": name})

    return SecurityHeaders(Gate(BodyLimit(app, max_upload_bytes), state, hosts))


def _thumbnail(index: Index, row: int) -> bytes | None:
    """The row's thumbnail as JPEG bytes, through the thumbnail cache (made once)."""
    from .thumbs import row_thumbnails

    img = row_thumbnails(index, [row], THUMB_SIDE, workers=1)[0]
    if img is None:
        return None
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=80)
    return buf.getvalue()


def is_loopback(host: str) -> bool:
    """Whether binding `host` keeps the service on this computer."""
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def server_config(app: Any, host: str, port: int,
                  trusted_proxies: list[str] | None = None) -> Any:
    """uvicorn's settings for `serve`: X-Forwarded-For and -Proto are believed only from
    the proxies named (uvicorn believes them from loopback by default, and a client
    behind a proxy on loopback could then be anyone it claims)."""
    import uvicorn

    return uvicorn.Config(app, host=host, port=port, log_level="warning",
                          proxy_headers=bool(trusted_proxies),
                          forwarded_allow_ips=list(trusted_proxies or []),
                          server_header=False)
