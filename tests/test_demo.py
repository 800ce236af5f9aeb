"""The README's first command, `make demo`, works with the network unreachable, and a
cached `check` never imports torch, on photos the tests make themselves."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from helpers import REPO, jpeg_bytes, synthetic_photo

DUPECHECK = REPO / ".venv" / "bin" / "dupecheck"


def _offline_prefix() -> list[str]:
    """`unshare -n` (a network namespace with no route out) where this user may; else []
    and the proxies below point nowhere."""
    unshare = shutil.which("unshare")
    if unshare and subprocess.run([unshare, "-n", "true"], capture_output=True).returncode == 0:
        return [unshare, "-n"]
    if unshare and subprocess.run([unshare, "-rn", "true"],
                                  capture_output=True).returncode == 0:
        return [unshare, "-rn"]
    return []


@pytest.mark.skipif(not DUPECHECK.exists(), reason="make demo runs the .venv's dupecheck")
def test_make_demo_works_offline(tmp_path):
    env = {**os.environ, "VENV": str(REPO / ".venv"),  # make demo's own is .venv-demo
           "DUPECHECK_INDEX": str(tmp_path / "demo-index"),
           "TORCH_HOME": str(tmp_path / "torch"), "HF_HOME": str(tmp_path / "hf"),
           "XDG_CACHE_HOME": str(tmp_path / "cache"),
           "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9",
           "https_proxy": "http://127.0.0.1:9", "http_proxy": "http://127.0.0.1:9"}
    env.pop("HF_HUB_OFFLINE", None)  # as a person's shell has it: dupecheck tries, and fails
    done = subprocess.run([*_offline_prefix(), "bash", str(REPO / "scripts" / "demo.sh")],
                          capture_output=True, text=True, env=env, timeout=600, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "this demo uses EfficientNet-Lite0" in done.stderr
    assert "model: efficientnet-lite0" in done.stderr
    out = " ".join(done.stdout.split())
    assert "efficientnet-lite0" in out  # the output says which model it used
    for name, verdict in (("IMG_0412.jpg", "near-identical"),
                          ("flower-reedit.jpg", "near-identical"),
                          ("walk-recropped.jpg", "re-framed"), ("never-posted.jpg", "new")):
        assert f"{name}: {verdict}" in out, (name, out[:2000])


def test_a_cached_check_never_imports_torch(tmp_path, resnet50_weights):
    folder = tmp_path / "export"
    folder.mkdir()
    for seed in range(3):
        (folder / f"{seed}.jpg").write_bytes(jpeg_bytes(synthetic_photo(seed)))
    env = {**os.environ, "DUPECHECK_INDEX": str(tmp_path / "idx"),
           "DUPECHECK_WEIGHTS": str(resnet50_weights),
           "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    indexed = subprocess.run([sys.executable, "-m", "dupecheck", "index", str(folder),
                              "--engine", "onnx", "--json"], capture_output=True, text=True,
                             env=env, timeout=600)
    assert indexed.returncode == 0, indexed.stderr[-2000:]
    assert json.loads(indexed.stdout)["photos"] == 3
    timed = subprocess.run([sys.executable, "-X", "importtime", "-m", "dupecheck", "check",
                            str(folder / "1.jpg"), "--engine", "onnx", "--json"],
                           capture_output=True, text=True, env=env, timeout=300)
    assert timed.returncode == 1, timed.stderr[-2000:]  # it is in the index: exact
    assert json.loads(timed.stdout)["results"][0]["verdict"] == "exact"
    imported = {line.rsplit("|", 1)[-1].strip() for line in timed.stderr.splitlines()
                if line.startswith("import time:")}
    assert "onnxruntime" in imported  # the measurement sees imports: it has teeth
    heavy = {m for m in imported if m.split(".")[0] in ("torch", "torchvision", "open_clip")}
    assert not heavy, sorted(heavy)[:10]
    # Nor what only other commands need: the analyses, plotting, the map's layout, serving;
    # nor pillow-heif for a JPEG; nor pydantic (Typer 0.29 would import it to parse options);
    # nor numpy.ma (np.unique's first call imports it: the re-framed search avoids it).
    unneeded = {m for m in imported if m.split(".")[0] in (
        "matplotlib", "sklearn", "openTSNE", "scipy", "fastapi", "uvicorn", "pillow_heif",
        "pydantic") or m == "numpy.ma" or m.startswith("numpy.ma.")
        or m in ("dupecheck.analysis", "dupecheck.calibrate", "dupecheck.photomap",
                 "dupecheck.mapview", "dupecheck.visual", "dupecheck.service",
                 "dupecheck.indexer", "dupecheck.engines.quantize")}
    assert not unneeded, sorted(unneeded)[:10]
