"""`make demo` on a fresh clone, this revision beside an earlier one, in one run.

    python scripts/bench_install.py [--baseline ab7bce3] [--out bench-install.json]

Each revision is cloned afresh and runs `make demo` from nothing (its own venv, its own
empty dupecheck, torch and Hugging Face caches; pip's cache is shared and warm, so the
time is installing, not downloading). Reports the wall time, the demo venv's size (du),
the size of a fresh venv where `pip install .` ran (what a user's install takes: pip
byte-compiles it all), the bytes of the wheels that venv is made of (what a machine with
an empty pip cache downloads; `pip download` of its frozen requirements), and the
ratios. Prints a table, writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

from bench import machine, table  # noqa: E402


def du(path: Path) -> int:
    return int(subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True,
                              check=True).stdout.split()[0])


def wheel_bytes(venv: Path, work: Path) -> int:
    """Bytes of the wheels (or sdists) pip fetches for what this venv holds."""
    python = venv / "bin" / "python"
    frozen = subprocess.run([str(python), "-m", "pip", "freeze", "--exclude-editable"],
                            capture_output=True, text=True, check=True).stdout
    reqs = work / "requirements.txt"
    reqs.write_text("\n".join(line for line in frozen.splitlines()
                              if not line.startswith("dupecheck")))  # the package itself
    dest = work / "wheels"
    subprocess.run([str(python), "-m", "pip", "download", "--quiet", "--no-deps", "-r",
                    str(reqs), "-d", str(dest)], check=True, capture_output=True)
    return sum(p.stat().st_size for p in dest.iterdir())


def run(rev: str, work: Path) -> dict:
    clone = work / "clone"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True)
    if rev != "HEAD":
        subprocess.run(["git", "checkout", "--quiet", rev], cwd=clone, check=True)
    # XDG_CACHE_HOME would move pip's cache too: it stays where it is (shared, warm)
    pip_cache = subprocess.run([sys.executable, "-m", "pip", "cache", "dir"],
                               capture_output=True, text=True, check=True).stdout.strip()
    env = {**os.environ, "XDG_CACHE_HOME": str(work / "cache"), "PIP_CACHE_DIR": pip_cache,
           "TORCH_HOME": str(work / "torch"), "HF_HOME": str(work / "hf")}
    start = time.perf_counter()
    done = subprocess.run(["make", "demo"], cwd=clone, env=env, capture_output=True,
                          text=True)
    seconds = time.perf_counter() - start
    venv = next(p for p in (clone / ".venv-demo", clone / ".venv") if p.is_dir())
    demo_bytes = du(venv)
    installed = work / "installed"  # `pip install .`, as a user's install is
    subprocess.run([sys.executable, "-m", "venv", str(installed)], check=True)
    subprocess.run([str(installed / "bin" / "python"), "-m", "pip", "install", "--quiet",
                    "--disable-pip-version-check", str(clone)], check=True, env=env)
    return {"rev": rev, "exit": done.returncode, "seconds": seconds, "venv": venv.name,
            "demo_venv_bytes": demo_bytes, "venv_bytes": du(installed),
            "wheel_bytes": wheel_bytes(installed, work),
            "torch": bool(list((installed / "lib").glob("python3*/site-packages/torch")))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="ab7bce3")
    parser.add_argument("--out", type=Path, default=REPO / "bench-install.json")
    args = parser.parse_args()
    results = []
    for rev in (args.baseline, "HEAD"):
        work = Path(tempfile.mkdtemp(prefix="dupecheck-install-"))
        try:
            results.append(run(rev, work))
        finally:
            shutil.rmtree(work, ignore_errors=True)
    before, now = results
    doc = {"machine": machine(), "baseline": before, "now": now,
           "time_ratio": before["seconds"] / now["seconds"],
           "venv_ratio": before["venv_bytes"] / now["venv_bytes"],
           "wheel_ratio": before["wheel_bytes"] / now["wheel_bytes"]}
    table("make demo on a fresh clone (pip's cache warm)", ["", args.baseline, "now", "ratio"], [
        ["wall time, s", f"{before['seconds']:.1f}", f"{now['seconds']:.1f}",
         f"{doc['time_ratio']:.2f}x"],
        ["demo venv, MB (du)", f"{before['demo_venv_bytes'] / 1e6:.0f}",
         f"{now['demo_venv_bytes'] / 1e6:.0f}", ""],
        ["`pip install .` venv, MB (du)", f"{before['venv_bytes'] / 1e6:.0f}",
         f"{now['venv_bytes'] / 1e6:.0f}", f"{doc['venv_ratio']:.2f}x"],
        ["wheels to download, MB", f"{before['wheel_bytes'] / 1e6:.0f}",
         f"{now['wheel_bytes'] / 1e6:.0f}", f"{doc['wheel_ratio']:.2f}x"],
        ["torch installed", str(before["torch"]), str(now["torch"]), ""],
        ["exit code", str(before["exit"]), str(now["exit"]), ""]])
    args.out.write_text(json.dumps(doc, indent=2))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
