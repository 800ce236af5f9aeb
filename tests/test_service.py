"""service.py, tokens.py and `serve` / `token`: the private service, through FastAPI's
TestClient (the page in a real browser is tests/test_page.py)."""

from __future__ import annotations

import io
import json
import os
import stat

import anyio
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from typer.testing import CliRunner

import tiny_engine
from dupecheck import service
from dupecheck.cli import app as cli_app
from dupecheck.service import (
    FREE_FAILURES,
    MAX_OWNER_REQUESTS,
    MAX_STRANGER_REQUESTS,
    FailureLog,
    Pairing,
    host_allowed,
)
from dupecheck.store import open_index
from dupecheck.tokens import TokenStore
from helpers import (
    jpeg_bytes,
    png_declaring,
    served_on_loopback,
    synthetic_photo,
)

TINY = tiny_engine.TINY
runner = CliRunner()
MAX_UPLOAD = 2 * 1024 * 1024


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def upload(name: str, data: bytes):
    return ("photo", (name, data, "image/jpeg"))


def test_health_needs_no_token_and_everything_else_does(served):
    client, token, *_ = served
    assert client.get("/api/health").json() == {"status": "ok", "photos": 3}
    for method, url in (("get", "/api/info"), ("get", "/api/thumb/0"), ("post", "/api/check"),
                        ("post", "/api/add")):
        r = getattr(client, method)(url)
        assert r.status_code == 401 and "token" in r.json()["error"]
    r = client.get("/api/info", headers=auth("dc_wrong"))
    assert r.status_code == 401 and set(r.json()) == {"error"}
    info = client.get("/api/info", headers=auth(token)).json()
    assert info["photos"] == 3 and TINY.name in info["models"]


def test_an_unexpected_failure_is_a_json_500_without_paths(served):
    """A missing CURRENT (the index folder emptied under a running server): JSON, and no
    path for a caller without a token."""
    client, _token, state, _export, tmp_path = served
    (state.index_dir / "CURRENT").unlink()
    r = TestClient(client.app, raise_server_exceptions=False).get("/api/health")
    assert r.status_code == 500 and set(r.json()) == {"error"}
    assert str(tmp_path) not in r.text and "CURRENT" not in r.text


def test_a_damaged_token_file_or_index_shows_no_path_without_a_token(served):
    client, token, state, _export, tmp_path = served
    (tmp_path / "config" / "tokens.json").write_text("{damaged")
    r = client.get("/api/info", headers=auth("dc_guess"))  # the token file is read
    assert r.status_code in (400, 503) and str(tmp_path) not in r.text, r.text
    assert "tokens.json" not in r.text
    (tmp_path / "config" / "tokens.json").unlink()
    state.tokens = type(state.tokens)(tmp_path / "config")
    token = state.tokens.create("phone")
    (state.index_dir / "CURRENT").write_text("gen-forged\n")
    for headers in ({}, auth("dc_wrong")):
        r = client.get("/api/health", headers=headers)
        assert r.status_code == 503 and str(tmp_path) not in r.text, r.text
    # The owner, with a valid token, is told what is wrong.
    r = client.get("/api/info", headers=auth(token))
    assert r.status_code == 503 and str(state.index_dir) in r.text, r.text


def test_the_page_runs_only_its_own_script_and_every_answer_says_nosniff(served):
    """The page's CSP allows its one inline script by hash (no 'unsafe-inline': an injected
    script would not run), no framing; every answer, the 401s too, carries nosniff and
    no-referrer. (tests/test_page.py runs the page in Chromium under this policy.)"""
    import base64
    import hashlib
    import re

    client, token, *_ = served
    page = client.get("/")
    csp = page.headers["content-security-policy"]
    script_src = re.search(r"script-src ([^;]*)", csp).group(1)
    [script] = re.findall(r"<script>(.*?)</script>", page.text, flags=re.DOTALL)
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    # its one inline script by hash; scripts only from its own origin (offline.js, ONNX
    # Runtime Web from the package); WebAssembly compiled, nothing eval'd
    assert script_src.split() == ["'self'", "'wasm-unsafe-eval'", f"'sha256-{digest}'"]
    assert "unsafe-inline" not in script_src and "frame-ancestors 'none'" in csp
    for r in (page, client.get("/api/health"), client.get("/api/info"),
              client.get("/api/info", headers=auth(token)), client.get("/nowhere")):
        assert r.headers["x-content-type-options"] == "nosniff", r.url
        assert r.headers["referrer-policy"] == "no-referrer", r.url


def test_the_page_is_an_installable_app_without_a_token(served):
    """Manifest, icons and service worker answer without a token (the page's shell holds
    nothing private); the page's CSP lets only its own origin register a worker."""
    client, *_ = served
    doc = client.get("/manifest.webmanifest").json()
    assert doc["display"] == "standalone" and doc["start_url"] == "/"
    for icon in doc["icons"]:
        r = client.get(icon["src"])
        side = int(icon["sizes"].split("x")[0])
        assert r.headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(r.content)).size == (side, side)
    assert sorted(i["sizes"] for i in doc["icons"]) == ["192x192", "512x512"]
    sw = client.get("/sw.js")
    assert sw.status_code == 200 and sw.headers["content-type"].startswith("text/javascript")
    assert '"/api/"' in sw.text  # never caches an answer of the API
    assert "worker-src 'self'" in client.get("/").headers["content-security-policy"]
    assert client.get("/icon-64.png").status_code == 404
    script = client.get("/offline.js")
    assert script.status_code == 200 and "window.dupecheck.offline" in script.text
    wasm = client.get("/vendor/onnxruntime-web/ort-wasm-simd-threaded.wasm")
    assert wasm.headers["content-type"] == "application/wasm" and wasm.content[:4] == b"\0asm"
    assert client.get("/vendor/onnxruntime-web/LICENSE").text.startswith("MIT License")
    for bad in ("../page.html", "..%2Fservice.py", "other.js"):
        assert client.get(f"/vendor/onnxruntime-web/{bad}").status_code == 404


def test_check_answers_exactly_what_check_json_says(served):
    client, token, state, export, tmp_path = served
    photo = export / "media/posts/1/2.jpg"
    copy = tmp_path / "IMG_0002.jpg"
    copy.write_bytes(photo.read_bytes())
    cli = runner.invoke(cli_app, ["check", str(copy), "--index", str(state.index_dir),
                                  "--json"])
    expected = json.loads(cli.stdout)
    r = client.post("/api/check", headers=auth(token), files=[upload("IMG_0002.jpg",
                                                                     copy.read_bytes())])
    assert r.status_code == 200
    doc = r.json()
    assert doc["results"][0]["photo"] == "IMG_0002.jpg"
    expected["results"][0]["photo"] = "IMG_0002.jpg"
    assert doc == expected
    assert doc["results"][0]["verdict"] == "exact"


def test_pairs_marked_not_a_match_are_skipped_by_the_service_as_by_the_cli(served):
    client, token, state, export, _ = served
    photo = export / "media/posts/1/2.jpg"
    args = ["check", str(photo), "--index", str(state.index_dir), "-t", "1.0", "--json"]
    marked = runner.invoke(cli_app, [*args, "--not", "media/posts/1/2.jpg"])
    assert marked.exit_code == 0, marked.output
    cli_doc = json.loads(marked.stdout)
    r = client.post("/api/check", headers=auth(token), data={"threshold": "1.0"},
                    files=[upload(str(photo), photo.read_bytes())])
    doc = r.json()
    assert doc["results"][0]["verdict"] == cli_doc["results"][0]["verdict"] == "new"
    assert doc["results"][0]["skipped"] == ["media/posts/1/2.jpg"]


def test_several_photos_top_k_and_threshold(served):
    client, token, _, export, _ = served
    files = [upload("a.jpg", (export / "media/posts/1/1.jpg").read_bytes()),
             upload("new.jpg", jpeg_bytes(synthetic_photo(77))),
             upload("broken.jpg", b"\xff\xd8\xff\xe0 not really")]
    r = client.post("/api/check", headers=auth(token), files=files,
                    data={"top_k": "2", "threshold": "1.0"})
    assert r.status_code == 200
    a, new, broken = r.json()["results"]
    assert (a["verdict"], new["verdict"], broken["verdict"]) == ("exact", "new", None)
    assert len(a["matches"]) == 2 and r.json()["threshold"] == 1.0
    assert "broken.jpg" in broken["error"]


@pytest.mark.parametrize("data,status,text", [
    ({"top_k": "0"}, 422, "top_k"), ({"top_k": "many"}, 422, "top_k"),
    ({"threshold": "2"}, 422, "threshold"), ({"threshold": "0"}, 422, "threshold")])
def test_bad_options_are_422_json(served, data, status, text):
    client, token, *_ = served
    r = client.post("/api/check", headers=auth(token), data=data,
                    files=[upload("a.jpg", jpeg_bytes(synthetic_photo(1)))])
    assert r.status_code == status and text in r.json()["error"]


def test_unreadable_images_are_400_with_the_reason(served):
    client, token, *_ = served
    r = client.post("/api/check", headers=auth(token),
                    files=[upload("bomb.png", png_declaring(40000, 40000))])
    assert r.status_code == 400 and "bomb.png" in r.json()["error"]
    assert "decompression bomb refused" in r.json()["error"]
    # The service's limit is lower than the CLI's: 56 MP is refused before decoding.
    r = client.post("/api/check", headers=auth(token),
                    files=[upload("huge.png", png_declaring(8000, 7000))])
    assert r.status_code == 400, r.text
    assert "8000 x 7000 pixels, over the 50000000-pixel limit" in r.json()["error"]
    r = client.post("/api/check", headers=auth(token), files=[upload("x.jpg", b"hello")])
    assert r.status_code == 400 and "not a photo" in r.json()["error"]
    assert client.get("/api/health").status_code == 200  # still serving


def test_an_upload_over_the_limit_is_413_while_it_streams(served):
    client, token, *_ = served
    big = b"\xff\xd8\xff" + os.urandom(MAX_UPLOAD)
    r = client.post("/api/check", headers=auth(token), files=[upload("big.jpg", big)])
    assert r.status_code == 413 and "MB limit" in r.json()["error"]

    # No Content-Length, a body that never ends: driven through the ASGI interface itself
    # (the test client would read it all first), the server must stop reading at ~2 MB.
    pulled = 0

    async def receive() -> dict:
        nonlocal pulled
        pulled += 1
        if pulled == 1:
            body = (b'--zz\r\nContent-Disposition: form-data; name="photo"; filename="a.jpg"'
                    b"\r\nContent-Type: image/jpeg\r\n\r\n\xff\xd8\xff")
        else:
            body = b"x" * (256 * 1024)
        return {"type": "http.request", "body": body, "more_body": pulled < 65}

    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": "/api/check",
             "raw_path": b"/api/check", "root_path": "", "query_string": b"",
             "server": ("testserver", 80), "client": ("127.0.0.1", 1),
             "headers": [(b"host", b"testserver"),
                         (b"authorization", f"Bearer {token}".encode()),
                         (b"content-type", b"multipart/form-data; boundary=zz"),
                         (b"transfer-encoding", b"chunked")]}
    anyio.run(client.app, scope, receive, send)
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 413
    assert pulled < 16  # stopped after about 2 MB of the 16 offered
    assert client.get("/api/health").status_code == 200


def test_thumbnails_only_by_row(served):
    client, token, *_ = served
    r = client.get("/api/thumb/0", headers=auth(token))
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert max(Image.open(io.BytesIO(r.content)).size) <= 320
    # never kept by the browser: after `token revoke` no cache answers for the server
    assert r.headers["cache-control"] == "no-store"
    for bad in ("-1", "3", str(10**9)):
        r = client.get(f"/api/thumb/{bad}", headers=auth(token))
        assert r.status_code == 404 and "no row" in r.json()["error"]
    r = client.get("/api/thumb/..%2F..%2Fetc%2Fpasswd", headers=auth(token))
    assert r.status_code in (404, 422) and "error" in r.json()


def test_a_path_in_the_file_name_reaches_no_disk(served):
    client, token, state, _, tmp_path = served
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    r = client.post("/api/check", headers=auth(token),
                    files=[upload("../../../tmp/evil/../x.jpg", jpeg_bytes(synthetic_photo(5)))])
    assert r.status_code == 200 and r.json()["results"][0]["photo"] == "x.jpg"
    r = client.post("/api/check", headers=auth(token),
                    files=[upload("C:\\Users\\me\\IMG.jpg", jpeg_bytes(synthetic_photo(5)))])
    assert r.json()["results"][0]["photo"] == "IMG.jpg"
    after = sorted(str(p) for p in tmp_path.rglob("*"))
    assert [p for p in after if p not in before and "config" not in p] == []


def test_a_revoked_token_stops_at_once_on_a_server_that_just_used_it(served):
    client, token, state, *_ = served
    for _ in range(3):  # the server's token cache is warm
        assert client.get("/api/info", headers=auth(token)).status_code == 200
    TokenStore(state.tokens.dir).revoke("phone")  # another process, the running server
    assert client.get("/api/info", headers=auth(token)).status_code == 401


@pytest.fixture
def pauses(monkeypatch):
    """The delays failed attempts wait, recorded instead of slept."""
    waited: list[float] = []

    async def pause(seconds: float) -> None:
        waited.append(seconds)

    monkeypatch.setattr(service, "_pause", pause)
    return waited


def test_a_valid_token_is_never_refused_or_slowed_by_anyone_elses_failures(served, pauses):
    """Behind a proxy every device is one client: a stranger's wrong guesses slow only the
    wrong guesses (growing delays, never a lock), and the owner's token and a valid pairing
    code pass at once."""
    client, token, state, *_ = served
    guesses = FREE_FAILURES + 7
    for _ in range(guesses):
        r = client.get("/api/info", headers=auth("dc_guess"))
        assert r.status_code == 401
    # As SECURITY.md says: 5 at once, then 0.5 s doubling up to 10 s.
    assert pauses == [0.0] * 5 + [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    pauses.clear()
    for path in ("/api/info", "/api/thumb/0"):
        assert client.get(path, headers=auth(token)).status_code == 200
    assert client.post("/api/check", headers=auth(token),
                       files=[upload("a.jpg", jpeg_bytes(synthetic_photo(8)))]).status_code == 200
    assert pauses == []
    # Wrong pairing codes count as failures of the same client; a valid code passes.
    state.pairing = Pairing.new()
    assert client.post("/api/pair", json={"code": "nope"}).status_code == 401
    assert pauses == [10.0]
    assert client.post("/api/pair", json={"code": state.pairing.code}).status_code == 200
    assert len(pauses) == 1


def test_failures_are_counted_per_client_forgotten_when_quiet_and_bounded():
    now = [0.0]
    log = FailureLog(clock=lambda: now[0])
    first = [log.record("10.0.0.1") for _ in range(7)]
    assert first == [0.0] * 5 + [0.5, 1.0]
    assert log.record("10.0.0.2") == 0.0  # another client starts afresh
    now[0] += 599
    assert log.record("10.0.0.1") == 2.0  # still remembered within ten minutes
    now[0] += 601
    assert log.record("10.0.0.1") == 0.0  # ten quiet minutes: forgotten
    for n in range(4096 + 500):  # one spoofed address after another
        log.record(f"spoof-{n}")
    assert len(log) == 4096 and "spoof-0" not in log.clients()


def test_a_new_generation_is_picked_up_without_a_restart(served, tiny_weights):
    client, token, state, export, _ = served
    (export / "media/posts/1/9.jpg").write_bytes(jpeg_bytes(synthetic_photo(9)))
    result = runner.invoke(cli_app, ["index", str(export), "--index", str(state.index_dir),
                                     "--model", TINY.name, "--weights", str(tiny_weights)])
    assert result.exit_code == 0
    assert client.get("/api/health").json()["photos"] == 4


def test_pairing_is_single_use(served):
    client, _, state, *_ = served
    state.pairing = Pairing.new()
    assert client.post("/api/pair", json={"code": "nope"}).status_code == 401
    r = client.post("/api/pair", json={"code": state.pairing.code})
    assert r.status_code == 200
    paired = r.json()["token"]
    assert client.get("/api/info", headers=auth(paired)).status_code == 200
    assert client.post("/api/pair", json={"code": state.pairing.code}).status_code == 401
    state.pairing = Pairing(code="x" * 22, expires=0.0)  # expired
    assert client.post("/api/pair", json={"code": "x" * 22}).status_code == 401
    # Hostile bodies: deep nesting and non-JSON are 400s, a large body 413, never a 500.
    deep = "[" * 100_000 + "]" * 100_000
    r = client.post("/api/pair", content=deep[:1000] + deep[-1000:])
    assert r.status_code == 413 and set(r.json()) == {"error"}
    r = client.post("/api/pair", content="[" * 400 + "]" * 400)
    assert r.status_code in (400, 401), r.text  # parsed or refused, never a 500
    assert client.post("/api/pair", content=b"\xff not json").status_code == 400


def test_json_that_nests_too_deep_for_the_parser_is_a_400(served, monkeypatch):
    """Within 1 KB Python's parser reaches no recursion limit; one that does (a smaller
    limit, another parser) raises RecursionError, which is the client's error, not a 500."""
    client, *_ = served

    def too_deep(*args, **kwargs):
        raise RecursionError("maximum recursion depth exceeded")

    with monkeypatch.context() as patched:
        patched.setattr(service.json, "loads", too_deep)
        status = client.post("/api/pair", content="[" * 400 + "]" * 400).status_code
    assert status == 400


def test_add_through_the_api_then_check_finds_it(served):
    client, token, *_ = served
    data = jpeg_bytes(synthetic_photo(60))
    r = client.post("/api/add", headers=auth(token), files=[upload("fresh.jpg", data)],
                    data={"caption": "from the phone"})
    assert r.status_code == 200 and r.json()["added"][0]["path"] == "uploaded/fresh.jpg"
    doc = client.post("/api/check", headers=auth(token), files=[upload("again.jpg", data)],
                      data={"threshold": "1.0"}).json()
    top = doc["results"][0]["matches"][0]
    assert doc["results"][0]["verdict"] == "exact" and top["kind"] == "added"
    assert top["caption"] == "from the phone"
    assert client.get(f"/api/thumb/{top['row']}", headers=auth(token)).status_code == 200


def test_openapi_and_the_page(served):
    client, *_ = served
    schema = client.get("/openapi.json").json()
    assert {"/api/check", "/api/health", "/api/info", "/api/thumb/{row}",
            "/api/add"} <= set(schema["paths"])
    page = client.get("/")
    assert page.status_code == 200 and "<script>" in page.text
    assert "http://" not in page.text.replace("http://www.w3.org", "")  # no CDN
    # FastAPI's doc pages load scripts from a CDN: not served on this origin.
    assert client.get("/docs").status_code == 404 and client.get("/redoc").status_code == 404


# -- tokens and the commands -------------------------------------------------------------


def test_a_config_folder_made_before_is_made_the_users_alone(tmp_path):
    """0700 also when the folder existed (made by hand, 0755): group and others lose
    their access when a token is written into it."""
    config = tmp_path / "config"
    config.mkdir(mode=0o755)
    os.chmod(config, 0o755)
    assert runner.invoke(cli_app, ["token", "create", "phone", "--config",
                                   str(config)]).exit_code == 0
    assert stat.S_IMODE(config.stat().st_mode) == 0o700


def test_tokens_are_shown_once_and_stored_hashed_0600(tmp_path):
    config = tmp_path / "config"
    r = runner.invoke(cli_app, ["token", "create", "phone", "--config", str(config)])
    assert r.exit_code == 0
    token = r.stdout.strip()
    assert token.startswith("dc_") and r.stdout == token + "\n"  # alone on stdout
    import base64

    assert len(base64.urlsafe_b64decode(token[3:] + "=")) == 32  # 32 random bytes
    stored = (config / "tokens.json").read_text()
    assert token not in stored
    assert stat.S_IMODE((config / "tokens.json").stat().st_mode) == 0o600
    listed = runner.invoke(cli_app, ["token", "list", "--config", str(config)])
    assert "phone" in listed.stdout and token not in listed.stdout
    again = runner.invoke(cli_app, ["token", "create", "phone", "--config", str(config)])
    assert again.exit_code == 2
    assert TokenStore(config).verify(token) == "phone"
    assert runner.invoke(cli_app, ["token", "revoke", "phone", "--config",
                                   str(config)]).exit_code == 0
    assert TokenStore(config).verify(token) is None
    env = runner.invoke(cli_app, ["token", "list"], env={"DUPECHECK_CONFIG": str(config)})
    assert "no tokens" in env.stdout


def test_every_stored_hash_is_compared_in_constant_time(tmp_path, monkeypatch):
    import hmac

    from dupecheck import tokens as tokens_module

    store = TokenStore(tmp_path / "config")
    made = [store.create(f"d{n}") for n in range(5)]
    compared: list[tuple[str, str]] = []
    original = hmac.compare_digest

    def counting(a, b):
        compared.append((a, b))
        return original(a, b)

    monkeypatch.setattr(tokens_module.hmac, "compare_digest", counting)
    assert store.verify(made[0]) == "d0"  # found first, and still every hash compared
    assert len(compared) == 5
    assert store.verify("dc_guess") is None and len(compared) == 10


def test_a_pairing_code_is_128_bits_and_lasts_ten_minutes(served):
    import base64
    import time

    client, _, state, *_ = served
    state.pairing = Pairing.new()
    assert len(base64.urlsafe_b64decode(state.pairing.code + "==")) == 16
    assert 599 <= state.pairing.expires - time.monotonic() <= 600
    state.pairing.expires = time.monotonic() - 0.001  # ten minutes later
    assert client.post("/api/pair", json={"code": state.pairing.code}).status_code == 401


def test_serve_refuses_to_start_without_a_token(served):
    _, _, state, _, tmp_path = served
    r = runner.invoke(cli_app, ["serve", "--index", str(state.index_dir), "--config",
                                str(tmp_path / "empty-config")])
    assert r.exit_code == 2 and "token create" in r.stderr


def test_what_the_phone_shortcuts_send_and_read(served, real_photos):
    """README's recipes: iOS Shortcuts and Android's HTTP Shortcuts send one multipart
    field `photo` (a HEIC straight from the camera roll) with the bearer header, and read
    results -> 1 -> verdict (and matches -> 1 -> taken_at)."""
    client, token, *_ = served
    heic = (real_photos / "heic__IMG_2927.HEIC").read_bytes()
    r = client.post("/api/check", headers={"Authorization": f"Bearer {token}"},
                    files={"photo": ("IMG_2927.HEIC", heic, "image/heic")})
    assert r.status_code == 200
    first = r.json()["results"][0]
    assert first["photo"] == "IMG_2927.HEIC" and first["verdict"] == "new"
    assert "taken_at" in first["matches"][0]


@pytest.fixture
def live(served):
    """The same app behind a real uvicorn on loopback, for what a test client cannot do."""
    client, token, *_ = served
    with served_on_loopback(client.app) as port:
        yield port, token


def _raw(port: int, head: bytes):
    import socket

    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(head)
    return sock


def test_a_2_gb_upload_is_refused_at_once_and_a_slow_one_blocks_no_one(live):
    import time

    import httpx

    port, token = live
    head = (f"POST /api/check HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: multipart/form-data; boundary=zz\r\n")
    big = _raw(port, (head + "Content-Length: 2147483648\r\n\r\n").encode())
    data = b""
    while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
        chunk = big.recv(4096)  # before any of the 2 GB was sent
        if not chunk:
            break
        data += chunk
    big.close()
    answer = data.decode(errors="replace")
    assert answer.startswith("HTTP/1.1 413") and "MB limit" in answer
    # A client trickling its upload a few bytes at a time: others are still answered.
    slow = _raw(port, (head + "Content-Length: 1000000\r\n\r\n--zz\r\n").encode())
    try:
        for _ in range(5):
            slow.sendall(b"x" * 10)
            start = time.monotonic()
            r = httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=5)
            assert r.status_code == 200 and time.monotonic() - start < 2
            time.sleep(0.1)
    finally:
        slow.close()
    assert httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=5).status_code == 200


_TOUCHER = """
import sys, time
from pathlib import Path
import dupecheck.tokens as t
t.LAST_USED_EVERY_S = 0  # every verify writes its last-used time: the race at its widest
store = t.TokenStore(Path(sys.argv[1]))
tokens = sys.argv[2:]
print("ready", flush=True)
end = time.monotonic() + 60
while not Path(sys.argv[1], "done").exists() and time.monotonic() < end:
    for token in tokens:
        store.verify(token)
"""


def test_a_revoke_racing_a_servers_last_used_writes_stays_revoked(tmp_path):
    """Another process (the running server) writes last-used times while `token revoke`
    runs: every revoked token stays revoked (without the lock, a server that read the file
    before the revoke wrote the revoked token back)."""
    import subprocess
    import sys

    config = tmp_path / "config"
    store = TokenStore(config)
    tokens = {f"t{n}": store.create(f"t{n}") for n in range(40)}
    server = subprocess.Popen([sys.executable, "-c", _TOUCHER, str(config), *tokens.values()],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout.readline().strip() == "ready"
        for name in tokens:
            TokenStore(config).revoke(name)
    finally:
        (config / "done").touch()
        server.wait(30)
    after = TokenStore(config)
    assert [n for n, token in tokens.items() if after.verify(token) is not None] == []
    assert after.list() == []


def test_x_forwarded_for_is_believed_only_from_a_proxy_serve_was_told_of(served, pauses):
    """Through uvicorn as `serve` runs it: a client on loopback naming a new address in each
    request is still one client (its delays grow; the failure table holds one entry); with
    --trust-proxy 127.0.0.1 the proxy's header names the client."""
    import httpx

    client, token, state, *_ = served
    with served_on_loopback(client.app) as port:
        for n in range(FREE_FAILURES + 3):
            r = httpx.get(f"http://127.0.0.1:{port}/api/info",
                          headers={**auth("dc_guess"), "X-Forwarded-For": f"203.0.113.{n}"})
            assert r.status_code == 401
        assert state.failures.clients() == ["127.0.0.1"]
        assert pauses[-1] > pauses[FREE_FAILURES] > 0
        r = httpx.get(f"http://127.0.0.1:{port}/api/info", headers=auth(token))
        assert r.status_code == 200 and "server" not in r.headers
    state.failures = FailureLog()
    with served_on_loopback(client.app, trusted_proxies=["127.0.0.1"]) as port:
        for n in range(3):
            httpx.get(f"http://127.0.0.1:{port}/api/info",
                      headers={**auth("dc_guess"), "X-Forwarded-For": f"203.0.113.{n}"})
    assert state.failures.clients() == [f"203.0.113.{n}" for n in range(3)]


def _asgi_request(path: str, headers: list[tuple[bytes, bytes]], method: str = "POST") -> dict:
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": method, "scheme": "http", "path": path, "raw_path": path.encode(),
            "root_path": "", "query_string": b"", "server": ("testserver", 80),
            "client": ("198.51.100.7", 1), "headers": [(b"host", b"testserver"), *headers]}


def test_no_byte_of_a_body_is_read_without_a_valid_token_and_requests_in_flight_are_capped(
        served, pauses):
    """The gate answers from the headers: a wrong token's upload is never parsed (the 401
    is sent whole before a byte is read; then at most LINGER_BYTES are read and thrown
    away, so that a client sending first reads the answer). Strangers
    holding pairing requests open fill at most MAX_STRANGER_REQUESTS places (then 503 at
    once), while the page, its
    worker, the health check and the owner's requests still pass; the owner's requests wait
    their turn beyond MAX_OWNER_REQUESTS, one token's beyond MAX_REQUESTS_PER_TOKEN."""
    client, token, state, *_ = served
    assert (MAX_STRANGER_REQUESTS, MAX_OWNER_REQUESTS,
            service.MAX_REQUESTS_PER_TOKEN) == (256, 8, 4)  # as SECURITY.md says
    app = client.app
    form = [(b"content-type", b"multipart/form-data; boundary=zz"),
            (b"content-length", b"60000000")]
    reads, sent_before_reading = 0, -1
    sent: list[dict] = []

    async def counting_receive() -> dict:
        nonlocal reads, sent_before_reading
        if not reads:
            sent_before_reading = len(sent)
        reads += 1
        return {"type": "http.request", "body": b"x" * 65536, "more_body": True}

    def from_client(scope: dict, n: int) -> dict:
        return {**scope, "client": (f"198.51.{n // 250}.{n % 250}", 1)}

    async def run() -> None:
        async def collect(msg: dict) -> None:
            sent.append(msg)

        await app(_asgi_request("/api/check", [(b"authorization", b"Bearer dc_guess"), *form]),
                  counting_receive, collect)
        assert sent[0]["status"] == 401 and sent_before_reading == 2  # head and body first
        assert reads <= service.LINGER_BYTES // 65536 + 1
        assert b"valid token" in b"".join(m.get("body", b"") for m in sent[1:])

        # Strangers holding pairing requests open, never sending their body.
        never = anyio.Event()
        entered = 0

        async def stalled() -> dict:
            nonlocal entered
            entered += 1
            await never.wait()
            return {"type": "http.disconnect"}

        answers: dict[str, list[int]] = {"stranger": [], "owner": [], "page": []}

        async def call(kind: str, scope: dict, receive) -> None:
            out: list[dict] = []

            async def keep(msg: dict) -> None:
                out.append(msg)

            await app(scope, receive, keep)
            answers[kind].append(out[0]["status"])

        async def empty() -> dict:
            return {"type": "http.request", "body": b"", "more_body": False}

        async with anyio.create_task_group() as tg:
            for n in range(MAX_STRANGER_REQUESTS):
                tg.start_soon(call, "stranger", from_client(_asgi_request("/api/pair", []), n),
                              stalled)
            while entered < MAX_STRANGER_REQUESTS:
                await anyio.sleep(0.01)
            await call("stranger", from_client(_asgi_request("/api/pair", []), 999), empty)
            assert answers["stranger"] == [503]
            for path in ("/", "/sw.js", "/api/health", "/manifest.webmanifest"):
                await call("page", from_client(_asgi_request(path, [], "GET"), 999), empty)
            assert answers["page"] == [200] * 4
            await call("owner", _asgi_request("/api/info", [(b"authorization",
                                                            f"Bearer {token}".encode())],
                                              "GET"), empty)
            assert answers["owner"] == [200]
            never.set()
        # The owner: one token's MAX_REQUESTS_PER_TOKEN read at once, every token's
        # MAX_OWNER_REQUESTS; the next waits for a place.
        gate = app.app
        gate_entered = 0
        release = anyio.Event()

        async def slow_owner() -> dict:
            nonlocal gate_entered
            gate_entered += 1
            await release.wait()
            return {"type": "http.disconnect"}

        def owner_scope(secret: str) -> dict:
            return _asgi_request("/api/check", [
                (b"authorization", f"Bearer {secret}".encode()),
                (b"content-type", b"multipart/form-data; boundary=zz")])  # under the limit

        others = [state.tokens.create(f"other-{n}") for n in range(2)]
        async with anyio.create_task_group() as tg:
            for _ in range(MAX_OWNER_REQUESTS):  # one token: its share alone gets in
                tg.start_soon(gate, owner_scope(token), slow_owner, collect)
            await anyio.sleep(0.5)
            assert gate_entered == service.MAX_REQUESTS_PER_TOKEN
            for secret in others:
                for _ in range(service.MAX_REQUESTS_PER_TOKEN):
                    tg.start_soon(gate, owner_scope(secret), slow_owner, collect)
            await anyio.sleep(0.5)
            assert gate_entered == MAX_OWNER_REQUESTS
            release.set()
        assert gate_entered == 2 * MAX_OWNER_REQUESTS

    anyio.run(run)


def test_a_form_with_too_many_files_or_fields_is_refused_and_spooled_parts_are_closed(served):
    client, token, *_ = served
    assert (service.MAX_PHOTOS, service.MAX_FORM_FIELDS) == (20, 4)  # as SECURITY.md says
    tiny = jpeg_bytes(synthetic_photo(3))
    r = client.post("/api/check", headers=auth(token),
                    files=[upload(f"{n}.jpg", tiny) for n in range(service.MAX_PHOTOS)])
    assert r.status_code == 200 and len(r.json()["results"]) == service.MAX_PHOTOS
    r = client.post("/api/check", headers=auth(token),
                    files=[upload(f"{n}.jpg", tiny) for n in range(service.MAX_PHOTOS + 1)])
    assert r.status_code == 400 and "files" in r.json()["error"].lower()
    r = client.post("/api/check", headers=auth(token), files=[upload("a.jpg", tiny)],
                    data={f"f{n}": "x" for n in range(service.MAX_FORM_FIELDS + 1)})
    assert r.status_code == 400 and "fields" in r.json()["error"].lower()
    # A part over 1 MB is spooled by Starlette to an unnamed temporary file: closed (no
    # descriptor left open) when the request ends.
    big = jpeg_bytes(synthetic_photo(4)) + os.urandom(1536 * 1024)  # a JPEG with a tail
    assert client.post("/api/check", headers=auth(token),
                       files=[upload("small.jpg", tiny)]).status_code == 200  # warm
    fds = len(os.listdir("/proc/self/fd"))
    for _ in range(3):
        r = client.post("/api/check", headers=auth(token), files=[upload("big.jpg", big)])
        assert r.status_code == 200, r.text
    assert len(os.listdir("/proc/self/fd")) <= fds


@pytest.mark.parametrize("host,ok", [
    ("127.0.0.1:8765", True), ("localhost:8765", True), ("[::1]:8765", True),
    ("192.168.1.20:8765", True), ("box.tailnet-1234.ts.net", True), ("photos.example", True),
    ("evil.example:8765", False), ("127.0.0.1.evil.example", False), ("ts.net.evil", False),
    ("", False)])
def test_only_known_host_names_are_answered(host, ok):
    assert host_allowed(host, ["photos.example"]) is ok


def test_a_dns_rebinding_host_gets_421_before_anything_else(served):
    client, token, *_ = served
    for path in ("/", "/api/health", "/api/info"):
        r = client.get(path, headers={"Host": "evil.example", **auth(token)})
        assert r.status_code == 421 and "allow-host" in r.json()["error"], path
    assert client.get("/api/health", headers={"Host": "127.0.0.1:8765"}).status_code == 200


def test_serve_binds_loopback_believes_no_proxy_and_refuses_plain_http_to_the_network(
        served, monkeypatch):
    """The real command, up to the moment uvicorn would listen."""
    import uvicorn

    _, _, state, _, tmp_path = served
    started: list[uvicorn.Config] = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda self: started.append(self.config))
    base = ["serve", "--index", str(state.index_dir), "--config", str(tmp_path / "config")]
    r = runner.invoke(cli_app, base)
    assert r.exit_code == 0, r.output
    [config] = started
    assert config.host == "127.0.0.1" and config.proxy_headers is False
    probe = TestClient(config.app)
    assert probe.get("/api/health", headers={"Host": "evil.example"}).status_code == 421
    for args in (["--host", "0.0.0.0"], ["--public-url", "http://box.example:8765"],
                 ["--public-url", "ftp://x"], ["--host", "0.0.0.0", "--qr", "--insecure-http"]):
        r = runner.invoke(cli_app, base + args)
        assert r.exit_code == 2 and len(started) == 1, (args, r.output)
    r = runner.invoke(cli_app, base + ["--host", "0.0.0.0", "--insecure-http"])
    assert r.exit_code == 0 and "plain HTTP" in r.stderr
    r = runner.invoke(cli_app, base + ["--public-url", "https://box.example", "--trust-proxy",
                                       "127.0.0.1"])
    assert r.exit_code == 0 and started[-1].proxy_headers is True
    probe = TestClient(started[-1].app)
    assert probe.get("/api/health", headers={"Host": "box.example"}).status_code == 200


def _add_over_http(port: int, token: str, seed: int) -> int:
    """POST one new photo to /api/add on the live server: its status."""
    import httpx

    return httpx.post(f"http://127.0.0.1:{port}/api/add", headers=auth(token),
                      files=[upload(f"new-{seed}.jpg", jpeg_bytes(synthetic_photo(seed)))],
                      timeout=120).status_code


def test_six_photos_added_at_once_all_land(live, served):
    """Adds at once take turns (the page does not queue a 503): each is added."""
    from concurrent.futures import ThreadPoolExecutor

    port, token = live
    _, _, state, *_ = served
    before = len(open_index(state.index_dir))
    with ThreadPoolExecutor(6) as pool:
        codes = list(pool.map(lambda seed: _add_over_http(port, token, seed), range(70, 76)))
    assert codes == [200] * 6
    assert len(open_index(state.index_dir)) == before + 6


def test_an_add_queued_behind_another_does_not_run_once_its_token_is_revoked(
        live, served, monkeypatch):
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    import dupecheck.added

    port, token = live
    _, _, state, *_ = served
    first_running, release = threading.Event(), threading.Event()
    real = dupecheck.added.add_photos

    def slow_add(*args, **kwargs):
        first_running.set()
        release.wait(30)
        return real(*args, **kwargs)

    monkeypatch.setattr(dupecheck.added, "add_photos", slow_add)
    before = len(open_index(state.index_dir))
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(_add_over_http, port, token, 80)
        assert first_running.wait(30)
        second = pool.submit(_add_over_http, port, token, 81)  # waits its turn behind the first
        time.sleep(1.0)
        TokenStore(state.tokens.dir).revoke("phone")
        release.set()
        assert first.result() == 200  # it was running: it finishes
        assert second.result() == 401  # it was waiting: it never runs
    assert len(open_index(state.index_dir)) == before + 1


def test_add_has_the_services_pixel_limit_as_check_has(served, monkeypatch):
    client, token, *_ = served
    monkeypatch.setattr(service, "SERVICE_MAX_PIXELS", 100 * 100)
    data = jpeg_bytes(synthetic_photo(90))  # more than 100 x 100
    for endpoint in ("/api/add", "/api/check"):
        r = client.post(endpoint, headers=auth(token), files=[upload("big.jpg", data)])
        assert r.status_code == 400 and "pixel limit" in r.json()["error"], (endpoint, r.text)


def test_decode_time_bombs_are_refused_in_time_and_the_owners_check_goes_on(served):
    """A 78 KB progressive JPEG of 8,000 scans (39 s to decode before) and a 28 KB RLE
    BMP (18 s), each twice, on /api/check and /api/add: refused as the photos they are
    not, at once; the owner's ordinary check after them is answered as ever."""
    import time

    from helpers import progressive_jpeg_bomb, rle8_bmp_bomb

    client, token, *_ = served
    for name, data in (("scans.jpg", progressive_jpeg_bomb()), ("rle.bmp", rle8_bmp_bomb())):
        for endpoint in ("/api/check", "/api/add"):
            start = time.monotonic()
            r = client.post(endpoint, headers=auth(token), files=[upload(name, data)] * 2)
            assert time.monotonic() - start < 3, (name, endpoint)
            assert r.status_code == 400 and name in r.json()["error"], r.text
    r = client.post("/api/check", headers=auth(token),
                    files=[upload("mine.jpg", jpeg_bytes(synthetic_photo(3)))])
    assert r.status_code == 200 and r.json()["results"][0]["verdict"] != "error"


def test_a_refusal_before_the_body_is_read_by_a_client_that_sends_the_body_first(live):
    """Python's urllib sends its whole body before it reads: a 401 (wrong token) or 413
    (over the limit by Content-Length) answered before the body reaches it intact, not as
    a connection reset (the server reads and discards what is on its way, bounded)."""
    import urllib.error
    import urllib.request

    port, token = live
    body = b"--zz\r\n" + os.urandom(6 * 1024 * 1024)
    for secret, status in (("dc_wrong", 401), (token, 413)):
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/check", data=body, method="POST",
            headers={"Authorization": f"Bearer {secret}",
                     "Content-Type": "multipart/form-data; boundary=zz"})
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(request, timeout=30)
        assert caught.value.code == status and b"error" in caught.value.read()


def test_a_pairing_body_that_trickles_is_cut_off(live, monkeypatch):
    import time

    monkeypatch.setattr(service, "STRANGER_BODY_S", 1.0)
    port, _ = live
    sock = _raw(port, b"POST /api/pair HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n")
    start, answer = time.monotonic(), b""
    sock.settimeout(0.5)
    while b"\r\n\r\n" not in answer and time.monotonic() - start < 10:
        try:
            sock.sendall(b" ")  # one byte every half second
            answer += sock.recv(4096)
        except TimeoutError:
            continue
        except OSError:
            break
    sock.close()
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert time.monotonic() - start < 4


def test_wrong_tokens_waiting_out_their_delay_hold_no_place_of_the_pages(served, monkeypatch):
    """Hundreds of wrong-token requests waiting out a failure delay: the page, the health
    check and pairing are answered at once beside them."""
    client, *_ = served
    app = client.app
    release = anyio.Event()
    waiting = 0

    async def pause(seconds: float) -> None:
        nonlocal waiting
        waiting += 1
        await release.wait()

    monkeypatch.setattr(service, "_pause", pause)

    async def run() -> None:
        statuses: list[int] = []

        async def call(scope: dict) -> None:
            out: list[dict] = []

            async def keep(msg: dict) -> None:
                out.append(msg)

            async def body() -> dict:
                return {"type": "http.request", "body": b'{"code": "x"}', "more_body": False}

            await app(scope, body, keep)
            statuses.append(out[0]["status"])

        async with anyio.create_task_group() as tg:
            for _ in range(MAX_STRANGER_REQUESTS + 50):
                tg.start_soon(call, _asgi_request("/api/info", [(b"authorization",
                                                                 b"Bearer dc_guess")], "GET"))
            while waiting < MAX_STRANGER_REQUESTS + 50:
                await anyio.sleep(0.01)
            for path in ("/", "/sw.js", "/api/health"):
                await call(_asgi_request(path, [], "GET"))
            assert statuses == [200, 200, 200]
            with anyio.fail_after(5):  # pairing is answered too (a wrong code: its delay)
                tg.start_soon(call, _asgi_request("/api/pair", [
                    (b"content-type", b"application/json"), (b"content-length", b"13")]))
                while waiting < MAX_STRANGER_REQUESTS + 51:
                    await anyio.sleep(0.01)
            release.set()
        assert statuses.count(401) == MAX_STRANGER_REQUESTS + 51

    anyio.run(run)


def test_two_checks_run_at_a_time_whatever_waits(live, served, monkeypatch):
    """SECURITY.md's memory figure rests on it: CHECK_WORKERS (2) checks decode at once;
    the other admitted requests wait for a worker."""
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    port, token = live
    _, _, state, *_ = served
    assert service.CHECK_WORKERS == 2  # as SECURITY.md says
    running, most = 0, 0
    lock = threading.Lock()
    real = service.check_photos

    def counting(*args, **kwargs):
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.3)
        try:
            return real(*args, **kwargs)
        finally:
            with lock:
                running -= 1

    monkeypatch.setattr(service, "check_photos", counting)
    others = [token] + [state.tokens.create(f"more-{n}") for n in range(2)]

    def check(n: int) -> int:
        return httpx.post(f"http://127.0.0.1:{port}/api/check", headers=auth(others[n % 3]),
                          files=[upload("a.jpg", jpeg_bytes(synthetic_photo(n)))],
                          timeout=60).status_code

    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(check, range(8))) == [200] * 8
    assert most == service.CHECK_WORKERS


def test_a_failure_delay_holds_only_its_own_request():
    """The real delay (the `pauses` fixture replaces it elsewhere): while one request waits
    out 0.5 s, the server's event loop goes on answering others."""
    async def run() -> list[float]:
        start = anyio.current_time()
        ticks: list[float] = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(service._pause, 0.5)
            for _ in range(5):
                await anyio.sleep(0.02)
                ticks.append(anyio.current_time() - start)
        return ticks

    ticks = anyio.run(run)
    assert ticks[0] < 0.2 and ticks[-1] < 0.4, ticks
