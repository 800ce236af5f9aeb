"""End to end through the real console script and the real ResNet-50 (random weights).

Photos from ../shared/data/photos are posted into a synthetic export as Instagram
would; checking the original camera files must find them. With random weights
the embedding scores mean nothing, so these checks run with --threshold 1.0
(embedding evidence off): what they prove is the exact and PDQ evidence, the
decoding (EXIF rotation, HEIC) and the crop variants, on real photos.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from helpers import LAYOUT_DIRS, instagramify, post, write_zip

POSTED = [
    "jpg__Canon_EOS_20D_(1).jpg",  # landscape
    "jpg__Canon_EOS_30D_(4).jpg",  # portrait 2:3, posted as its 4:5 crop
    "jpg__Apple_iPhone_4S.jpg",  # EXIF orientation 6: stored sideways
    "jpg__Canon_PowerShot_A85.jpg",  # EXIF orientation 8
    "heic__IMG_2927.HEIC",  # an iPhone HEIC, portrait
]
NOT_POSTED = "jpg__Nikon_D100.jpg"


def dupecheck(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dupecheck", *args], capture_output=True,
                          text=True, env=env, timeout=300)


@pytest.fixture
def env(tmp_path, resnet50_weights):
    return {**os.environ, "DUPECHECK_INDEX": str(tmp_path / "index"),
            "DUPECHECK_WEIGHTS": str(resnet50_weights)}


def test_originals_are_found_in_an_instagram_export(tmp_path, real_photos, env):
    meta = LAYOUT_DIRS["D"]
    files: dict[str, object] = {}
    entries = []
    for n, name in enumerate(POSTED):
        uri = f"media/posts/202405/{n}_n.jpg"
        files[uri] = instagramify((real_photos / name).read_bytes())
        entries.append(post(uri, 1715000000 + n, f"post {n}"))
    files[f"instagram-jane/{meta}/posts_1.json"] = entries
    files = {k if k.startswith("instagram-jane/") else f"instagram-jane/{k}": v
             for k, v in files.items()}
    archive = write_zip(tmp_path / "instagram-jane-2025-10-29-UXHp.zip", files)

    indexed = dupecheck("index", str(archive), "--json", env=env)
    assert indexed.returncode == 0, indexed.stderr
    assert json.loads(indexed.stdout)["photos"] == len(POSTED)

    originals = [str(real_photos / name) for name in POSTED]
    checked = dupecheck("check", *originals, "--threshold", "1.0", "--json", env=env)
    assert checked.returncode == 1, checked.stderr
    doc = json.loads(checked.stdout)
    assert doc["model"] == "resnet50"
    for n, result in enumerate(doc["results"]):
        best = result["matches"][0]
        assert result["verdict"] == "near-identical", (POSTED[n], best)
        assert best["path"] == f"media/posts/202405/{n}_n.jpg"
        assert best["caption"] == f"post {n}" and best["pdq_distance"] <= 31
    portrait = doc["results"][1]["matches"][0]
    assert portrait["variant"] == "4:5"  # found through Instagram's crop

    fresh = dupecheck("check", str(real_photos / NOT_POSTED), "--threshold", "1.0",
                      "--quiet", env=env)
    assert (fresh.returncode, fresh.stdout) == (0, "")

    info = dupecheck("info", "--json", env=env)
    assert json.loads(info.stdout)["photos"] == len(POSTED)

    # With the ONNX model cached by `index`, `check` never imports torch.
    timed = subprocess.run([sys.executable, "-X", "importtime", "-m", "dupecheck", "check",
                            originals[0], "--quiet"], capture_output=True, text=True, env=env,
                           timeout=300)
    assert timed.returncode == 1, timed.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in timed.stderr.splitlines()
                if line.startswith("import time:")}
    assert "onnxruntime" in imported
    heavy = {m for m in imported if m.split(".")[0] in ("torch", "torchvision", "open_clip")}
    assert not heavy, sorted(heavy)[:10]
