"""The light install: every command with --model resnet50 works where PyTorch, torchvision,
open_clip, timm and huggingface_hub cannot be imported, and what needs them says which
extra to install (exit 3), never a traceback.

Each command runs in a fresh process in which those packages are hidden (an import of
any of them fails, and `importlib.util.find_spec` finds none), as in a venv made by
`pip install dupecheck`. scripts/check_light_install.py makes such a venv for real.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from helpers import PHOTOS, REPO

HIDDEN = ("torch", "torchvision", "open_clip", "timm", "huggingface_hub")
PRELUDE = ("import sys\n"
           "class Hide:\n"
           "    def find_spec(self, name, path=None, target=None):\n"
           f"        if name.split('.')[0] in {HIDDEN!r}:\n"
           "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
           "sys.meta_path.insert(0, Hide())\n")
EXAMPLE = REPO / "examples" / "instagram-jane.doe-2025-10-29-UXHp.zip"
CANDIDATES = sorted((REPO / "examples" / "candidates").glob("*.jpg"))


def light(*args: object, code: int | None = 0) -> subprocess.CompletedProcess:
    """`dupecheck ARGS` with the heavy packages hidden."""
    script = PRELUDE + ("from dupecheck.cli import main\n"
                        "sys.argv = ['dupecheck', *sys.argv[1:]]\n"
                        "main()\n")
    result = subprocess.run([sys.executable, "-c", script, *map(str, args)],
                            capture_output=True, text=True, timeout=600)
    if code is not None:
        assert result.returncode == code, (args, result.stdout[-2000:], result.stderr[-2000:])
    assert "Traceback" not in result.stderr, result.stderr
    return result


@pytest.fixture(scope="module")
def light_weights(tmp_path_factory):
    """Random ResNet-50 weights written by the script, itself without torch."""
    out = tmp_path_factory.mktemp("light") / "resnet50-random.safetensors"
    script = PRELUDE + ("import runpy\n"
                        "sys.argv = ['make_random_weights.py', 'resnet50', sys.argv[1]]\n"
                        f"runpy.run_path({str(REPO / 'scripts' / 'make_random_weights.py')!r},"
                        " run_name='__main__')\n")
    subprocess.run([sys.executable, "-c", script, str(out)], check=True, timeout=300)
    return out


@pytest.mark.slow
def test_every_resnet50_command_runs_without_torch(tmp_path, light_weights):
    idx = tmp_path / "idx"
    common = ["--index", idx, "--weights", light_weights]
    doc = json.loads(light("index", EXAMPLE, *common, "--json").stdout)
    assert doc["photos"] >= 4 and doc["embedded"] == doc["photos"]
    result = light("check", *CANDIDATES, *common, "--json", "-t", "1.0", code=1)
    verdicts = {r["photo"].rsplit("/", 1)[-1]: r["verdict"]
                for r in json.loads(result.stdout)["results"]}
    assert verdicts.pop("never-posted.jpg") == "new"
    assert "new" not in verdicts.values(), verdicts  # the three the demo says are posted
    light("info", "--index", idx)
    light("add", CANDIDATES[2], *common)  # never-posted.jpg, posted now
    light("remove", CANDIDATES[2], "--index", idx)
    light("dupes", "--index", idx, code=None)
    light("stats", "--index", idx, "--json")
    light("calibrate", *common, "--sample", 4, "--json")
    light("compare", CANDIDATES[0], CANDIDATES[0], "--weights", light_weights, code=1)
    page = tmp_path / "map.html"
    light("map", *common, "--out", page)
    assert page.is_file()
    # int8 needs 16 photos or more: the test set's 29 JPEGs, as a folder.
    from PIL import Image

    folder = tmp_path / "photos"
    folder.mkdir()
    for path in sorted(PHOTOS.glob("jpg__*")):
        img = Image.open(path).convert("RGB")
        img.thumbnail((480, 480))
        img.save(folder / path.name, quality=90)
    int8 = tmp_path / "int8"
    doc = json.loads(light("index", folder, "--index", int8, "--weights", light_weights,
                           "--precision", "int8", "--json").stdout)
    assert doc["int8_fidelity"]["photos"] >= 16  # the gate ran on an int8 model built here


def test_what_needs_torch_names_the_extra_to_install(tmp_path, light_weights):
    result = light("compare", CANDIDATES[0], CANDIDATES[1], "--model", "mobileclip-s2",
                   code=3)
    assert "pip install 'dupecheck[mobileclip]'" in result.stderr
    result = light("compare", CANDIDATES[0], CANDIDATES[1], "--weights", light_weights,
                   "--engine", "torch", code=3)
    assert "pip install 'dupecheck[torch]'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
