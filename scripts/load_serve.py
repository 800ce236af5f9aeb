"""Load test of `dupecheck serve`, loopback only, bounded in time; prints a table, writes JSON.

    python scripts/load_serve.py [--photos ../shared/data/photos] [--clients 8]
                                 [--seconds 60] [--out load-serve.json]

Side by side in one run, for one 8 MP JPEG (a camera photo upscaled to 3264 x 2448):
a cold `dupecheck check` in a fresh process (median of 5), a warm check through the
service with one client (median of 10), and 8 concurrent clients for 60 s (p50, p99,
errors, requests), with the server's peak RSS. Index: the photos as an export holds
them, ResNet-50 with random weights on ONNX Runtime (speed does not depend on them).
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

from helpers import instagramify  # noqa: E402


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


def main() -> int:
    import httpx

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, default=REPO.parent / "shared/data/photos")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=60.0)
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
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "/api/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
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
