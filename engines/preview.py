"""Per-step previews.

After every denoising step the engine shows the model's current guess of the *clean* image (x0),
not the noisy latent: x0 looks like the final picture from the first steps on. We read x0 from the
scheduler itself (`X0Capture`), then turn latents into RGB either with a fixed linear map (four
latent channels → three colours, near-free) or with TAESD, a tiny decoder, when one is installed.
"""

from __future__ import annotations

import functools

import logging
from typing import Any

import numpy as np
import torch
from PIL import Image

log = logging.getLogger(__name__)

# Linear latent→RGB maps fitted for the SD 1.x/2.x and SDXL VAEs, applied to latents in the
# UNet's (scaled) space; the result is roughly in [-1, 1]. Rows: latent channel; columns: R, G, B.
LATENT_RGB: dict[str, tuple[list[list[float]], list[float]]] = {
    "sd": (
        [[0.3512, 0.2297, 0.3227], [0.3250, 0.4974, 0.2350], [-0.2829, 0.1762, 0.2721], [-0.2120, -0.2616, -0.7177]],
        [0.0, 0.0, 0.0],
    ),
    "sdxl": (
        [[0.3651, 0.4232, 0.4341], [-0.2533, -0.0042, 0.1068], [0.1076, 0.1111, -0.0362], [-0.3165, -0.2492, -0.2188]],
        [0.1084, -0.0175, -0.0011],
    ),
}

TAESD_REPOS = {"sd": "madebyollin/taesd", "sdxl": "madebyollin/taesdxl"}


class LinearPreview:
    """Latents (1, 4, h, w) → RGB uint8 (h, w, 3) with one small matrix product on the device."""

    name = "linear"

    def __init__(self, family: str, device: torch.device, dtype: torch.dtype) -> None:
        factors, bias = LATENT_RGB[family]
        self.factors = torch.tensor(factors, device=device, dtype=dtype)
        self.bias = torch.tensor(bias, device=device, dtype=dtype)

    @torch.no_grad()
    def __call__(self, latents: torch.Tensor) -> np.ndarray:
        rgb = torch.einsum("chw,cr->hwr", latents[0].to(self.factors.dtype), self.factors) + self.bias
        rgb = ((rgb + 1.0) * 127.5).clamp(0, 255).to(torch.uint8)
        return rgb.cpu().numpy()  # the one host copy per step


class TaesdPreview:
    """Latents → RGB at full resolution through TAESD (an AutoencoderTiny), on the model's device."""

    name = "taesd"

    def __init__(self, decoder: Any) -> None:
        self.decoder = decoder

    @torch.no_grad()
    def __call__(self, latents: torch.Tensor) -> np.ndarray:
        param = next(self.decoder.parameters())
        image = self.decoder.decode(latents.to(param.device, param.dtype)).sample[0]
        rgb = ((image.permute(1, 2, 0) + 1.0) * 127.5).clamp(0, 255).to(torch.uint8)
        return rgb.cpu().numpy()


def find_taesd(family: str, device: torch.device, dtype: torch.dtype, source: str | None = None) -> TaesdPreview | None:
    """A TAESD decoder from `source` (a folder) or the local Hugging Face cache; never downloads."""
    from engines.catalog import installed_path

    # Only an installed folder goes to from_pretrained: given a hub id, diffusers asks huggingface_hub
    # even with local_files_only, which warns on every run of a computer without TAESD.
    folder = source or installed_path(TAESD_REPOS[family])
    if folder is None:  # not installed is the normal case, not an error
        log.debug("no TAESD for %s: %s is not installed", family, TAESD_REPOS[family])
        return None
    from diffusers import AutoencoderTiny

    try:
        decoder = AutoencoderTiny.from_pretrained(str(folder), local_files_only=True, use_safetensors=True)
    except Exception as exc:  # a folder that is not a TAESD (or a damaged one) falls back like a missing one
        log.debug("no TAESD for %s: %s", family, exc)
        return None
    return TaesdPreview(decoder.to(device, dtype).eval())


_PREVIEWERS: dict[tuple, Any] = {}


def previewer_for(kind: str, family: str, device: torch.device, dtype: torch.dtype) -> Any:
    """make_previewer, kept per (kind, family, device, dtype): looking for TAESD once is enough."""
    key = (kind, family, str(device), str(dtype))
    if key not in _PREVIEWERS:
        _PREVIEWERS[key] = make_previewer(kind, family, device, dtype)
    return _PREVIEWERS[key]


def make_previewer(kind: str, family: str, device: torch.device, dtype: torch.dtype, taesd_source: str | None = None):
    """The previewer for `kind` ("auto", "taesd", "linear" or "off"); auto prefers TAESD when installed."""
    if kind == "off":
        return None
    if kind in ("auto", "taesd"):
        taesd = find_taesd(family, device, dtype, taesd_source)
        if taesd is not None:
            return taesd
    return LinearPreview(family, device, dtype)


class X0Capture:
    """Wraps a scheduler's `step` to keep its estimate of the clean latents (x0) for the preview.

    DDIM, Euler and most others return that estimate as `pred_original_sample`; DPM-Solver++
    keeps it as the last entry of `model_outputs`. Schedulers with neither leave `x0` as None and
    the caller previews the latents themselves. The wrapper is installed on one scheduler instance,
    which each run creates afresh, so nothing global changes.
    """

    def __init__(self, scheduler: Any) -> None:
        self.x0: torch.Tensor | None = None
        self._step = scheduler.step
        self._scheduler = scheduler

        # The pipeline reads the step's signature to decide whether to pass `generator` and `eta`: the
        # wrapper must show the scheduler's own, or ancestral samplers would draw unseeded noise.
        @functools.wraps(self._step)
        def step(*args: Any, **kwargs: Any) -> Any:
            return self.step(*args, **kwargs)

        scheduler.step = step

    def step(self, *args: Any, return_dict: bool = True, **kwargs: Any) -> Any:
        out = self._step(*args, return_dict=True, **kwargs)
        x0 = getattr(out, "pred_original_sample", None)
        if x0 is None and "++" in str(getattr(self._scheduler.config, "algorithm_type", "")):
            outputs = getattr(self._scheduler, "model_outputs", None)
            x0 = outputs[-1] if outputs else None
        self.x0 = x0
        return out if return_dict else (out.prev_sample,)


def render_device(device: torch.device) -> torch.device:
    """Where previews are rendered, off the denoising thread: the model's device, except on Apple's MPS,
    where Metal crashes the process when two threads use it at once; there the step callback copies
    the small preview tensor to the CPU (`handed_over`) and previews render on the CPU."""
    return torch.device("cpu") if device.type == "mps" else device


def handed_over(tensor: torch.Tensor) -> torch.Tensor:
    """The preview tensor as the step callback hands it over (see render_device)."""
    return tensor.to("cpu", torch.float32) if tensor.device.type == "mps" else tensor


def compose(preview: np.ndarray, base: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Show the preview only where the result will land: scale it to `base` and blend through `alpha`."""
    h, w = base.shape[:2]
    if preview.shape[:2] != (h, w):
        preview = np.asarray(Image.fromarray(preview).resize((w, h), Image.BILINEAR))
    a = alpha[:, :, None]
    return (base * (1.0 - a) + preview * a).astype(np.uint8)
