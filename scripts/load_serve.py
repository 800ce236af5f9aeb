"""Load test of `dupecheck serve`, loopback only, bounded in time; prints a table, writes JSON.

    python scripts/load_serve.py [--photos ../shared/data/photos] [--clients 8]
                                 [--seconds 60] [--hostile-seconds 30] [--out load-serve.json]

Side by side in one run, for one 8 MP JPEG (a camera photo upscaled to 3264 x 2448):
a cold `dupecheck check` in a fresh process (median of 5), a warm check through the
service with one client (median of 10), and 8 concurrent clients for 60 s (p50, p99,
errors, requests), with the server's peak RSS. Index: the photos as an export holds
them, ResNet-50 with random weights on ONNX Runtime (speed does not depend on them).

Then, on a fresh server: 8 concurrent worst-case uploads with a valid token (PNGs just
under the service's pixel limit whose decode takes the most memory: 8-bit RGBA and
16-bit grey; a PNG with a 60 MB eXIf chunk, a GIF of 30 million comment sub-blocks), the
server's peak RSS after them; decode time bombs (a progressive JPEG of 8,000 scans, an
RLE BMP of 7000 rows) twice at once beside the owner's check, each timed; and a hostile
mix beside the valid clients' checks (wrong tokens with 60 MB bodies, wrong tokens under
spoofed X-Forwarded-For, uploads over the size limit, decompression bombs, a foreign
Host, /api/add of 100 MP, 64 strangers trickling pairing bodies, the page and health
asked meanwhile): every valid check must succeed, and the table says how each hostile
request was answered.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(REPO / "tests"))

from bench import machine, random_weights, table  # noqa: E402

from helpers import (  # noqa: E402
    gif_with_comment_blocks,
    instagramify,
    png_with_chunk,
    progressive_jpeg_bomb,
    rle8_bmp_bomb,
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def eight_mp_jpeg(photos: Path, out: Path) -> Path:
    from PIL import Image

    src = next(p for p in sorted(photos.iterdir()) if p.suffix.lower() == ".jpg")
    img = Image.open(src).convert("RGB").resize((3264, 2448), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=92)
    out.write_bytes(buf.getvalue())
    return out


def vmhwm_mb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) // 1024
    return -1


def wait_healthy(url: str) -> None:
    import httpx

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/api/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.2)


def worst_case_pngs() -> dict[str, bytes]:
    """PNGs just under the service's pixel limit whose decode takes the most memory."""
    import numpy as np
    from PIL import Image

    from dupecheck.service import SERVICE_MAX_PIXELS

    side = int(SERVICE_MAX_PIXELS ** 0.5) - 1
    ramp = (np.arange(side, dtype=np.uint32)[None, :] * 7 + np.arange(side)[:, None] * 3)
    out = {}
    for name, img in (("rgba-8bit.png", Image.fromarray(
                          np.dstack([(ramp % 251).astype(np.uint8)] * 3
                                    + [(ramp % 256).astype(np.uint8)]), "RGBA")),
                      ("grey-16bit.png", Image.fromarray((ramp % 65521).astype(np.uint16)))):
        buf = io.BytesIO()
        img.save(buf, "PNG", compress_level=1)
        out[name] = buf.getvalue()
    return out


def hostile_phase(url: str, token: str, photo: bytes, pid: int, clients: int,
                  seconds: float) -> dict:
    """8 concurrent worst-case uploads (peak RSS), then valid checks beside a hostile mix."""
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    headers = {"Authorization": f"Bearer {token}"}
    pngs = worst_case_pngs()

    def upload(name: str, data: bytes, hdrs: dict[str, str], endpoint: str = "/api/check"
               ) -> int:
        try:
            return httpx.post(url + endpoint, headers=hdrs, timeout=300,
                              files={"photo": (name, data, "image/png")}).status_code
        except httpx.HTTPError:
            return 0  # the server answered and closed before the body was sent

    # What is parsed before the pixels, at its largest: a 60 MB eXIf chunk, a GIF of
    # 30 million comment sub-blocks (both ~60 MB, under the 64 MB upload limit).
    pngs["exif-60mb.png"] = png_with_chunk(b"eXIf", 60_000_000)
    pngs["gif-30m-comment-blocks.gif"] = gif_with_comment_blocks(30_000_000)
    names = [list(pngs)[n % len(pngs)] for n in range(8)]
    start = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        worst = list(pool.map(lambda n: upload(n, pngs[n], headers), names))
    worst_s = time.perf_counter() - start
    worst_peak = vmhwm_mb(pid)
    sizes = ", ".join(f"{n} {len(d) // 1024} KB" for n, d in pngs.items())
    print(f"\n8 concurrent worst-case uploads ({sizes}): statuses {sorted(worst)}, "
          f"{worst_s:.1f} s, server peak RSS {worst_peak} MB")
    # Decode time bombs, twice each at once, and the owner's check beside them.
    bombs = {"progressive-8000-scans.jpg": progressive_jpeg_bomb(),
             "rle8-7000-rows.bmp": rle8_bmp_bomb()}
    timed: dict[str, list[tuple[int, float]]] = {}

    def timed_upload(name: str) -> None:
        t0 = time.perf_counter()
        status = upload(name, bombs[name], headers) if name in bombs else upload(
            "IMG.jpg", photo, headers)
        timed.setdefault(name, []).append((status, time.perf_counter() - t0))

    with ThreadPoolExecutor(5) as pool:
        list(pool.map(timed_upload, [*bombs, *bombs, "owner's check"]))
    for name, runs in timed.items():
        size = f" ({len(bombs[name]) // 1024} KB)" if name in bombs else ""
        print(f"{name}{size}: " + ", ".join(f"{s} in {t:.2f} s" for s, t in runs))

    big = os.urandom(60 * 1024 * 1024)
    bomb = worst_case_bomb()
    wrong = {"Authorization": "Bearer dc_no"}
    over = big + big[:10 * 1024 * 1024]
    hostile = {
        "wrong token, 60 MB body": lambda n: upload("x.jpg", big, wrong),
        "wrong token, spoofed X-Forwarded-For": lambda n: upload(
            "x.jpg", photo, {**wrong, "X-Forwarded-For": f"10.0.{n % 250}.1"}),
        "valid token, 70 MB body": lambda n: upload("x.jpg", over, headers),
        "valid token, decompression bomb": lambda n: upload("bomb.png", bomb, headers),
        "foreign Host (DNS rebinding)": lambda n: httpx.get(
            url + "/api/health", headers={"Host": "evil.example"}, timeout=60).status_code,
        "valid token, /api/add of a 100 MP PNG": lambda n: upload(
            "big.png", hundred_mp, headers, "/api/add"),
        "valid token, progressive JPEG of 8,000 scans": lambda n: upload(
            "scans.jpg", bombs["progressive-8000-scans.jpg"], headers),
        "pairing beside 64 strangers trickling theirs": lambda n: trickle_pair(),
        "stranger, the page and the health check": lambda n: max(
            httpx.get(url + path, timeout=10).status_code for path in ("/", "/sw.js",
                                                                       "/api/health")),
    }
    hundred_mp = hundred_megapixel_png()

    def trickle_pair() -> int:
        """64 connections sending a pairing body a byte every 2 s, and beside them a
        pairing with a (wrong) code: its answer (401 is answered; 503 would be blocked)."""
        def one() -> int:
            sock = socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])),
                                            timeout=30)
            try:
                sock.sendall(b"POST /api/pair HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                             b"application/json\r\nContent-Length: 200\r\n\r\n")
                sock.settimeout(2)
                answer = b""
                for _ in range(30):
                    try:
                        sock.sendall(b" ")
                        answer += sock.recv(4096)
                        if b"\r\n" in answer:
                            break
                    except TimeoutError:
                        continue
                return int(answer.split()[1]) if answer.startswith(b"HTTP/") else 0
            except OSError:
                return 0
            finally:
                sock.close()

        with ThreadPoolExecutor(64) as trickling:
            cut = [trickling.submit(one) for _ in range(64)]
            time.sleep(1.5)
            try:
                status = httpx.post(url + "/api/pair", json={"code": "not-the-code"},
                                    timeout=30).status_code
            except httpx.HTTPError:
                status = 0
            for future in cut:
                code = future.result()
                with lock:
                    trickled[code] = trickled.get(code, 0) + 1
        return status

    answers: dict[str, dict[int, int]] = {k: {} for k in hostile}
    trickled: dict[int, int] = {}
    valid: list[tuple[float, int]] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def valid_client() -> None:
        with httpx.Client() as client:
            while time.monotonic() < stop_at:
                t0 = time.perf_counter()
                try:
                    status = client.post(url + "/api/check", headers=headers, timeout=120,
                                         files={"photo": ("IMG.jpg", photo, "image/jpeg")}
                                         ).status_code
                except httpx.HTTPError:
                    status = 0
                with lock:
                    valid.append((time.perf_counter() - t0, status))

    def attacker(kind: str) -> None:
        n = 0
        while time.monotonic() < stop_at:
            status = hostile[kind](n)
            n += 1
            with lock:
                answers[kind][status] = answers[kind].get(status, 0) + 1

    threads = [threading.Thread(target=valid_client) for _ in range(clients)]
    threads += [threading.Thread(target=attacker, args=(k,)) for k in hostile]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ok = sum(1 for _, s in valid if s == 200)
    slowest = max((t for t, _ in valid), default=0.0)
    table(f"hostile mix for {seconds:.0f} s beside {clients} valid clients",
          ["requests", "answers (status: count)"],
          [[k, ", ".join(f"{s}: {c}" for s, c in sorted(v.items()))] for k, v in answers.items()]
          + [["the trickling pairing bodies", ", ".join(
              f"{s}: {c}" for s, c in sorted(trickled.items()))],
             ["valid checks", f"{ok} of {len(valid)} answered 200, slowest {slowest:.2f} s"]])
    return {"worst_case_uploads": {"pngs": {n: len(d) for n, d in pngs.items()},
                                   "statuses": worst, "seconds": worst_s,
                                   "server_peak_rss_mb": worst_peak},
            "decode_bombs": timed,
            "hostile": {"seconds": seconds, "answers": answers, "trickled": trickled,
                        "valid_checks": len(valid), "valid_ok": ok,
                        "valid_slowest_s": slowest,
                        "server_peak_rss_mb": vmhwm_mb(pid)}}


def hundred_megapixel_png() -> bytes:
    """A flat 10000 x 10000 PNG (a few hundred KB): over the service's 50 MP on any
    endpoint."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (10000, 10000), 7).save(buf, "PNG")
    return buf.getvalue()


def worst_case_bomb() -> bytes:
    """A 16-bit greyscale PNG of 10900 x 10900 in ~230 KB (the one in issue #26)."""
    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.zeros((10900, 10900), np.uint16)).save(buf, "PNG")
    return buf.getvalue()


def main() -> int:
    import httpx

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, default=REPO.parent / "shared/data/photos")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--hostile-seconds", type=float, default=30.0)
    parser.add_argument("--out", type=Path, default=REPO / "load-serve.json")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dupecheck-load-"))
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "XDG_CACHE_HOME": str(work / "cache"),
           "DUPECHECK_INDEX": str(work / "index"), "DUPECHECK_CONFIG": str(work / "config")}
    dupecheck = [sys.executable, "-m", "dupecheck"]
    server = None
    try:
        export = work / "export"
        export.mkdir()
        for i, p in enumerate(sorted(args.photos.iterdir())):
            (export / f"{i:03d}.jpg").write_bytes(instagramify(p.read_bytes()))
        weights = random_weights("resnet50", work)
        env["DUPECHECK_WEIGHTS"] = str(weights)
        subprocess.run([*dupecheck, "index", str(export), "--engine", "onnx", "--quiet"],
                       env=env, check=True)
        photo = eight_mp_jpeg(args.photos, work / "IMG_8MP.jpg")
        token = subprocess.run([*dupecheck, "token", "create", "load"], env=env, check=True,
                               capture_output=True, text=True).stdout.strip()
        cold = []
        for _ in range(6):
            start = time.perf_counter()
            subprocess.run([*dupecheck, "check", str(photo), "--quiet", "--engine", "onnx"],
                           env=env)
            cold.append(time.perf_counter() - start)
        cold = cold[1:]  # the first warms the page cache
        port = free_port()
        server = subprocess.Popen([*dupecheck, "serve", "--port", str(port), "--engine", "onnx"],
                                  env=env, stderr=subprocess.PIPE, text=True)
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url)
        data = photo.read_bytes()
        headers = {"Authorization": f"Bearer {token}"}

        def one(client: httpx.Client) -> tuple[float, int]:
            start = time.perf_counter()
            r = client.post(url + "/api/check", headers=headers,
                            files={"photo": ("IMG_8MP.jpg", data, "image/jpeg")}, timeout=120)
            return time.perf_counter() - start, r.status_code

        with httpx.Client() as client:
            one(client)  # warm-up
            warm = [one(client)[0] for _ in range(10)]
        latencies: list[float] = []
        errors = 0
        lock = threading.Lock()
        stop_at = time.monotonic() + args.seconds

        def worker() -> None:
            nonlocal errors
            with httpx.Client() as client:
                while time.monotonic() < stop_at:
                    try:
                        seconds, status = one(client)
                    except httpx.HTTPError:
                        seconds, status = 0.0, 0
                    with lock:
                        if status == 200:
                            latencies.append(seconds)
                        else:
                            errors += 1

        threads = [threading.Thread(target=worker) for _ in range(args.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        peak = vmhwm_mb(server.pid)
        latencies.sort()
        p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] if latencies else 0
        doc = {"machine": machine(), "photo": "8 MP JPEG (3264 x 2448)",
               "cold_check_median_s": statistics.median(cold),
               "warm_single_client_median_s": statistics.median(warm),
               "warm_over_cold": statistics.median(warm) / statistics.median(cold),
               "clients": args.clients, "seconds": args.seconds, "requests": len(latencies),
               "errors": errors, "p50_s": statistics.median(latencies) if latencies else 0,
               "p99_s": p99, "server_peak_rss_mb": peak}
        table("cold check vs the warm service, one 8 MP JPEG",
              ["what", "seconds"],
              [["cold `dupecheck check` (median of 5)", f"{doc['cold_check_median_s']:.2f}"],
               ["warm, one client (median of 10)", f"{doc['warm_single_client_median_s']:.2f}"],
               ["warm / cold", f"{doc['warm_over_cold']:.2f}"],
               [f"{args.clients} clients for {args.seconds:.0f} s: p50",
                f"{doc['p50_s']:.2f}"],
               [f"{args.clients} clients: p99", f"{doc['p99_s']:.2f}"]])
        print(f"   {len(latencies)} requests, {errors} errors, server peak RSS {peak} MB")
        server.terminate()
        server.wait(10)
        server = subprocess.Popen([*dupecheck, "serve", "--port", str(port), "--engine",
                                   "onnx"], env=env, stderr=subprocess.PIPE, text=True)
        wait_healthy(url)
        doc.update(hostile_phase(url, token, data, server.pid, args.clients,
                                 args.hostile_seconds))
        args.out.write_text(json.dumps(doc, indent=2))
        print(f"\nwrote {args.out}")
    finally:
        if server is not None:
            server.terminate()
            server.wait(10)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
