"""Check that the default install stays light: no PyTorch, and under 1 GB.

    python scripts/check_light_install.py [VENV]        (make light-check; .ci/run)

VENV is a virtual environment where `pip install dupecheck` (no extras) was run (make
demo's .venv-demo); without it, one is made in a temporary folder from this checkout.
Prints its size (du) and what each of the largest packages takes; exits 1 when torch,
torchvision, open_clip or timm can be imported there, or it is 1 GB or more.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LIMIT_BYTES = 1_000_000_000
HEAVY = ("torch", "torchvision", "open_clip", "timm")


def du(path: Path) -> int:
    out = subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[0])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("venv", type=Path, nargs="?")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dupecheck-light-") as tmp:
        venv = args.venv
        if venv is None:
            venv = Path(tmp) / "venv"
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
                            str(REPO)], check=True)
        python = str(venv / "bin" / "python")
        probe = f"import importlib.util as u; print(*[n for n in {HEAVY!r} if u.find_spec(n)])"
        found = subprocess.run([python, "-c", probe], capture_output=True, text=True,
                               check=True).stdout.split()
        works = subprocess.run([str(venv / "bin" / "dupecheck"), "--version"],
                               capture_output=True, text=True)
        size = du(venv)
        site = next((venv / "lib").glob("python3*/site-packages"))
        largest = sorted(((du(p), p.name) for p in site.iterdir() if p.is_dir()),
                         reverse=True)[:8]
    print(f"{venv}: {size / 1e6:.0f} MB (limit {LIMIT_BYTES / 1e6:.0f} MB); "
          f"heavy packages importable: {', '.join(found) or 'none'}; "
          f"`dupecheck --version`: {works.stdout.strip() or works.stderr.strip()[:80]}")
    for bytes_, name in largest:
        print(f"  {bytes_ / 1e6:7.0f} MB  {name}")
    ok = not found and size < LIMIT_BYTES and works.returncode == 0
    print("light install: " + ("ok" if ok else "NOT light"))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
