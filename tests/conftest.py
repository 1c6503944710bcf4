"""Shared fixtures. Everything runs offline on tiny random-weight models built here."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# No test may reach the network or write into the person's own folders.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


@pytest.fixture(scope="session", autouse=True)
def private_folders(tmp_path_factory):
    base = tmp_path_factory.mktemp("home")
    for var in ("XDG_CACHE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME"):
        os.environ[var] = str(base / var.lower())
    os.environ["HF_HOME"] = str(base / "hf")
    yield base


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    """Factory: the folder of a tiny model of `kind`, built once per session."""
    from engines.testing import write_model

    built: dict[str, Path] = {}

    def get(kind: str = "inpaint") -> Path:
        if kind not in built:
            built[kind] = write_model(tmp_path_factory.mktemp(kind), kind)
        return built[kind]

    return get


@pytest.fixture(scope="session")
def photo() -> np.ndarray:
    """A real photograph (scikit-image's astronaut, 512×512 RGB)."""
    from skimage import data

    return np.ascontiguousarray(data.astronaut())


def blob_mask(height: int, width: int, seed: int = 0, count: int = 3) -> np.ndarray:
    """An irregular mask: a few random ellipses, 255 = repaint."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width]
    mask = np.zeros((height, width), bool)
    for _ in range(count):
        cy, cx = rng.uniform(0.25, 0.75) * height, rng.uniform(0.25, 0.75) * width
        ry, rx = rng.uniform(0.03, 0.12) * height, rng.uniform(0.03, 0.12) * width
        mask |= ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    return np.where(mask, 255, 0).astype(np.uint8)


def textured(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth-but-detailed synthetic picture of any size."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width] / max(height, width)
    channels = [127 + 100 * np.sin(2 * np.pi * (rng.uniform(1, 6) * xx + rng.uniform(1, 6) * yy + rng.uniform())) for _ in range(3)]
    noise = rng.normal(0, 6, (height, width, 3))
    return np.clip(np.stack(channels, -1) + noise, 0, 255).astype(np.uint8)


@pytest.fixture
def hub(model_dir, monkeypatch, tmp_path):
    """A local Hugging Face hub serving the tiny inpainting model as "tiny/inpaint", with the client
    online and an empty cache of its own."""
    import huggingface_hub.constants

    from tests.hubserver import Hub

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # read once at import; the suite starts offline
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    server = Hub()
    server.add_folder("tiny/inpaint", model_dir("inpaint"))
    server.start()
    yield server
    server.stop()
