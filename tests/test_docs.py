"""The README and the documentation: generated pages current, the quick start runs as
written, the version follows the changelog, the screenshots are renders of this code."""

from __future__ import annotations

import glob
import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest

from helpers import CHROMEDRIVER, CHROMIUM, REPO

sys.path.insert(0, str(REPO / "scripts"))

import gen_docs  # noqa: E402


@pytest.mark.parametrize("page", sorted(gen_docs.PAGES, key=str), ids=lambda p: p.name)
def test_a_generated_page_is_what_the_generator_writes(page):
    assert page.read_text(encoding="utf-8") == gen_docs.PAGES[page](), (
        f"{page.name} is stale: run scripts/gen_docs.py")


def test_the_reference_names_every_option_of_every_command():
    import typer

    from dupecheck.cli import app

    text = gen_docs.reference()
    root = typer.main.get_command(app)
    for name in root.list_commands(None):
        command = root.get_command(None, name)
        subcommands = (command.list_commands(None) if hasattr(command, "list_commands")
                       else [None])
        for sub in subcommands:
            leaf = command.get_command(None, sub) if sub else command
            heading = " ".join(x for x in ("dupecheck", name, sub) if x)
            assert f"## `{heading}`" in text, heading
            section = text.split(f"## `{heading}`", 1)[1].split("\n## ", 1)[0]
            for param in leaf.params:
                for opt in getattr(param, "opts", []):
                    if opt.startswith("-"):
                        assert f"`{opt}`" in section, (heading, opt)


def test_the_speed_page_shows_each_benchmarks_latest_run():
    runs = gen_docs.latest_runs()
    assert runs["serve-load-hostile"].name == "2026-12-07-serve-load-hostile.txt"  # the newer
    assert runs["check-forms-new-600"].name == "2026-12-04-check-forms-new-600-3.txt"
    assert runs["install"].name == "2026-12-04-install-5.txt"  # the day's fifth run
    text = gen_docs.speed()
    for path in runs.values():
        assert f"`benchmarks/{path.name}`" in text
    assert "2026-12-04-check-forms-new-600-2.txt" not in text  # older runs stay out


def test_the_readme_is_a_front_door():
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 200
    assert lines[2:6] == ["```", "make demo", "make test", "```"]


def test_the_version_follows_the_changelog():
    from dupecheck import __version__

    changelog = (REPO / "CHANGELOG.md").read_text(encoding="utf-8")
    released = re.findall(r"^## \[(\d+\.\d+\.\d+)\] - \d{4}-\d{2}-\d{2}$", changelog, re.M)
    assert released and released[0] == __version__
    pyproject = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    assert 'dynamic = ["version"]' in pyproject
    assert 'version = {attr = "dupecheck.__version__"}' in pyproject
    shown = subprocess.run([sys.executable, "-m", "dupecheck", "--version"],
                           capture_output=True, text=True,
                           env={**os.environ, "PYTHONPATH": str(REPO / "src")}).stdout
    assert shown.strip() == f"dupecheck {__version__}"


def _quick_start() -> list[str]:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    block = next(b for b in re.findall(r"```\n(.*?)```", readme, re.S)
                 if "dupecheck index" in b)
    return [line.split("  #")[0].strip() for line in block.splitlines()
            if line.startswith("dupecheck ")]


@pytest.mark.slow
def test_the_readmes_quick_start_runs_as_written(tmp_path, resnet50_weights):
    """Each `dupecheck` line of the quick start, in a folder holding examples/ (random
    weights, as `make demo` uses where the real ones cannot be had)."""
    shutil.copytree(REPO / "examples", tmp_path / "examples")
    env = {**os.environ, "DUPECHECK_INDEX": str(tmp_path / "index"),
           "DUPECHECK_WEIGHTS": str(resnet50_weights),
           "PYTHONPATH": str(REPO / "src")}
    commands = _quick_start()
    assert [c.split()[1] for c in commands] == ["index", "check", "map"]
    expected = {"index": 0, "check": 1, "map": 0}  # check: the example holds posted ones
    for line in commands:
        args = []
        for word in shlex.split(line)[1:]:
            args += sorted(glob.glob(word, root_dir=tmp_path)) if "*" in word else [word]
        done = subprocess.run([sys.executable, "-m", "dupecheck", *args], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == expected[args[0]], (line, done.stderr[-2000:])
    assert (tmp_path / "map.png").is_file() and (tmp_path / "map.html").is_file()


@pytest.mark.slow
@pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="needs chromium and "
                    "chromium-driver")
def test_the_screenshots_are_renders_of_this_code(tmp_path):
    """scripts/screenshots.py renders the report, the map and the phone page with a
    verdict; the pictures in docs/img are its output (same names and sizes)."""
    from PIL import Image, ImageStat

    done = subprocess.run([sys.executable, str(REPO / "scripts" / "screenshots.py"),
                           "--out", str(tmp_path)], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    for name in ("report.png", "map.png", "phone.png"):
        fresh = Image.open(tmp_path / name)
        kept = Image.open(REPO / "docs" / "img" / name)
        assert fresh.size == kept.size, name
        assert max(ImageStat.Stat(fresh.convert("L")).stddev) > 10, name  # not blank


def test_every_test_security_md_names_exists():
    """SECURITY.md proves each claim by naming a test: each name is a test of the suite
    (or a test file), so a renamed or deleted test cannot leave a claim unproved."""
    text = (REPO / "SECURITY.md").read_text(encoding="utf-8")
    names = set(re.findall(r"\b(test_[a-z0-9_]+)\b", text))
    suite = "".join(p.read_text(encoding="utf-8") for p in (REPO / "tests").glob("*.py"))
    missing = sorted(n for n in names if f"def {n}(" not in suite
                     and not (REPO / "tests" / f"{n}.py").is_file())
    assert len(names) > 40 and not missing, missing
