"""Render the pictures the docs show, in Debian's Chromium, from the example archive.

    python scripts/screenshots.py [--out docs/img]          (make screenshots)

report.png: `check --report` of the example's four photos; map.png: `dupecheck map` of
the example; phone.png: the phone page, paired by its QR link, after checking a photo.
ResNet-50 runs with the real weights where they are cached, else EfficientNet-Lite0 with
its installed trained weights, as `make demo` does; random ResNet-50 weights (with
'similar' off) only where neither can be had.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "tests"))

EXAMPLE = REPO / "examples" / "instagram-jane.doe-2025-10-29-UXHp.zip"
CANDIDATES = sorted((REPO / "examples" / "candidates").glob("*.jpg"))


def browser(width: int, height: int, profile: Path):  # -> selenium WebDriver
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or shutil.which("chromium-browser")
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                "--no-first-run", "--disable-background-networking", "--force-color-profile=srgb",
                f"--window-size={width},{height}", "--allow-file-access-from-files",
                f"--user-data-dir={profile}"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)


def weights(work: Path) -> tuple[str, Path, list[str]]:
    """(model, weights, extra args): ResNet-50's real weights where cached, else
    EfficientNet-Lite0's (installed with dupecheck[lite0]: real scores too); only without
    either, random ResNet-50 weights and `--threshold 1.0`."""
    from dupecheck.engines import get_model_spec
    from dupecheck.engines.weights import cached_weights

    for name in ("resnet50", "efficientnet-lite0"):
        real = cached_weights(get_model_spec(name))
        if real is not None:
            return name, real, []
    path = work / "resnet50-random.safetensors"
    subprocess.run([sys.executable, str(REPO / "scripts" / "make_random_weights.py"),
                    "resnet50", str(path)], check=True, capture_output=True)
    return "resnet50", path, ["--threshold", "1.0"]


def dupecheck(*args: object, env: dict[str, str], ok: tuple[int, ...] = (0,)) -> None:
    done = subprocess.run([sys.executable, "-m", "dupecheck", *map(str, args)], env=env,
                          capture_output=True, text=True)
    if done.returncode not in ok:
        raise SystemExit(f"dupecheck {args[0]} failed:\n{done.stderr[-2000:]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "img")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="dupecheck-shots-"))
    try:
        model, w, threshold = weights(work)
        env = {**os.environ, "DUPECHECK_INDEX": str(work / "index"),
               "DUPECHECK_WEIGHTS": str(w), "DUPECHECK_CONFIG": str(work / "config"),
               "PYTHONPATH": os.pathsep.join([str(REPO / "src"),
                                              os.environ.get("PYTHONPATH", "")])}
        dupecheck("index", EXAMPLE, "--model", model, "--quiet", env=env)
        report = work / "report.html"
        dupecheck("check", *CANDIDATES, "--report", report, "--quiet", *threshold, env=env,
                  ok=(0, 1))
        page = work / "map.html"
        dupecheck("map", "--out", page, "--quiet", *threshold, env=env)
        shots = [("report.png", report.as_uri(), (1200, 900)),
                 ("map.png", page.as_uri(), (1200, 800))]
        for name, url, (width, height) in shots:
            driver = browser(width, height, work / f"chrome-{name}")
            try:
                driver.get(url)
                time.sleep(1.5)  # the map draws its thumbnails on a canvas
                driver.save_screenshot(str(args.out / name))
            finally:
                driver.quit()
        phone(args.out / "phone.png", model, w, threshold, work, env)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for name in ("report.png", "map.png", "phone.png"):
        print(f"wrote {args.out / name}")
    return 0


def phone(dest: Path, model: str, w: Path, threshold: list[str], work: Path,
          env: dict[str, str]) -> None:
    """The phone page, paired through its QR link, with the verdict for a re-edit."""
    from dataclasses import replace

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    from dupecheck.engines import get_model_spec
    from dupecheck.engines.weights import file_sha256
    from dupecheck.precision import engine_for
    from dupecheck.service import Pairing, ServiceState, create_app
    from dupecheck.store import open_index, republish
    from dupecheck.tokens import TokenStore
    from helpers import served_on_loopback

    spec = get_model_spec(model)
    index = open_index(work / "index")
    if threshold:  # random weights: 'similar' off, as a calibrated 1.0 would be
        republish(index, {n: replace(e, threshold=1.0) for n, e in index.models.items()})
        index = open_index(work / "index")
    engine = engine_for(index, spec, w, "onnx")
    state = ServiceState(work / "index", spec, engine, file_sha256(w),
                         TokenStore(work / "config"))
    state.pairing = Pairing.new()
    with served_on_loopback(create_app(state)) as port:
        driver = browser(420, 900, work / "chrome-phone")
        try:
            wait = WebDriverWait(driver, 120)
            driver.get(f"http://127.0.0.1:{port}/#pair={state.pairing.code}")
            wait.until(ec.text_to_be_present_in_element((By.ID, "status"), "Paired as"))
            driver.find_element(By.ID, "photo").send_keys(
                str(next(p for p in CANDIDATES if "walk" in p.name)))
            wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, ".verdict")))
            wait.until(lambda d: d.execute_script(
                "return [...document.images].every(i => i.complete && i.naturalWidth > 0)"))
            driver.save_screenshot(str(dest))
        finally:
            driver.quit()


if __name__ == "__main__":
    raise SystemExit(main())
