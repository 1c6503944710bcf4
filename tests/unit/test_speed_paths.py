"""The speed settings: a compiled UNet (dynamic shapes) and channels-last on a graphics card."""

import os

import numpy as np
import pytest
import torch

from engines import models, registry
from engines.api import CancelToken, Request, Task


def test_compile_wraps_the_unet_with_dynamic_shapes_and_is_cached_apart(model_dir):
    folder = str(model_dir("inpaint"))
    plain = models.load_pipeline("inpaint", folder, torch.device("cpu"), torch.float32)
    compiled = models.load_pipeline("inpaint", folder, torch.device("cpu"), torch.float32, compile=True)
    assert compiled is not plain and not hasattr(plain.pipe.unet, "_orig_mod")
    assert hasattr(compiled.pipe.unet, "_orig_mod")  # torch.compile's OptimizedModule (compiles lazily, on the first call)
    assert models.load_pipeline("inpaint", folder, torch.device("cpu"), torch.float32, compile=True) is compiled


@pytest.mark.skipif(not os.environ.get("SANDCASTLE_SLOW_TESTS"), reason="compiling takes 1–2 minutes on a CPU; set SANDCASTLE_SLOW_TESTS=1")
def test_a_compiled_unet_runs_new_crop_sizes_without_recompiling(model_dir, photo):
    import torch._dynamo

    engine = registry.get("inpaint")
    torch._dynamo.reset()
    for size in (64, 96):
        mask = np.zeros(photo.shape[:2], np.uint8)
        mask[100 : 100 + size, 100 : 100 + size] = 255
        engine.run(Request(Task.INPAINT, photo, mask, prompt="x", steps=2, model=str(model_dir("inpaint")), compile=True,
                           params={"resolution": size}), lambda s: None, CancelToken())
    counters = torch._dynamo.utils.counters
    assert counters["stats"]["unique_graphs"] <= 2, dict(counters["stats"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA graphics card")
def test_on_a_graphics_card_the_unet_and_vae_are_channels_last(model_dir):
    loaded = models.load_pipeline("inpaint", str(model_dir("inpaint")), torch.device("cuda"), torch.float16)
    weight = next(p for p in loaded.pipe.unet.parameters() if p.ndim == 4)
    assert weight.is_contiguous(memory_format=torch.channels_last)


def test_the_sdxl_benchmark_structure_is_sdxl_sized():
    """The "sdxl" size must have the real SDXL UNet's shape (2.57 billion parameters for text-to-image),
    or the 8 GB memory check on a GPU would measure the wrong thing. Built on the meta device: no memory."""
    from engines.testing import build_pipeline

    with torch.device("meta"):
        pipe = build_pipeline("sdxl-inpaint", "sdxl")
    unet = sum(p.numel() for p in pipe.unet.parameters())
    assert 2.55e9 < unet < 2.58e9, unet
    assert pipe.unet.config.cross_attention_dim == 2048 and pipe.unet.config.in_channels == 9
    assert pipe.text_encoder.config.hidden_size + pipe.text_encoder_2.config.hidden_size == 2048
