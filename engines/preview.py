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

# The diffusion transformers' VAEs, from ComfyUI's published factors (comfy/latent_formats.py: Flux,
# Flux2, and Wan21, whose VAE Qwen-Image uses), applied as ComfyUI applies them: to the latents the
# transformer works in (FLUX.1: (z - shift) * scale; FLUX.2: 2×2-unpatchified but still batch-norm
# normalised; Qwen-Image: (z - mean) / std), after `unpack_latents`.
LATENT_RGB["flux"] = (
    [[-0.0346, 0.0244, 0.0681], [0.0034, 0.0210, 0.0687], [0.0275, -0.0668, -0.0433], [-0.0174, 0.0160, 0.0617],
     [0.0859, 0.0721, 0.0329], [0.0004, 0.0383, 0.0115], [0.0405, 0.0861, 0.0915], [-0.0236, -0.0185, -0.0259],
     [-0.0245, 0.0250, 0.1180], [0.1008, 0.0755, -0.0421], [-0.0515, 0.0201, 0.0011], [0.0428, -0.0012, -0.0036],
     [0.0817, 0.0765, 0.0749], [-0.1264, -0.0522, -0.1103], [-0.0280, -0.0881, -0.0499], [-0.1262, -0.0982, -0.0778]],
    [-0.0329, -0.0718, -0.0851],
)
LATENT_RGB["flux2"] = (
    [[0.0058, 0.0113, 0.0073], [0.0495, 0.0443, 0.0836], [-0.0099, 0.0096, 0.0644], [0.2144, 0.3009, 0.3652],
     [0.0166, -0.0039, -0.0054], [0.0157, 0.0103, -0.0160], [-0.0398, 0.0902, -0.0235], [-0.0052, 0.0095, 0.0109],
     [-0.3527, -0.2712, -0.1666], [-0.0301, -0.0356, -0.0180], [-0.0107, 0.0078, 0.0013], [0.0746, 0.0090, -0.0941],
     [0.0156, 0.0169, 0.0070], [-0.0034, -0.0040, -0.0114], [0.0032, 0.0181, 0.0080], [-0.0939, -0.0008, 0.0186],
     [0.0018, 0.0043, 0.0104], [0.0284, 0.0056, -0.0127], [-0.0024, -0.0022, -0.0030], [0.1207, -0.0026, 0.0065],
     [0.0128, 0.0101, 0.0142], [0.0137, -0.0072, -0.0007], [0.0095, 0.0092, -0.0059], [0.0000, -0.0077, -0.0049],
     [-0.0465, -0.0204, -0.0312], [0.0095, 0.0012, -0.0066], [0.0290, -0.0034, 0.0025], [0.0220, 0.0169, -0.0048],
     [-0.0332, -0.0457, -0.0468], [-0.0085, 0.0389, 0.0609], [-0.0076, 0.0003, -0.0043], [-0.0111, -0.0460, -0.0614]],
    [-0.0329, -0.0718, -0.0851],
)
LATENT_RGB["qwen"] = (
    [[-0.1299, -0.1692, 0.2932], [0.0671, 0.0406, 0.0442], [0.3568, 0.2548, 0.1747], [0.0372, 0.2344, 0.1420],
     [0.0313, 0.0189, -0.0328], [0.0296, -0.0956, -0.0665], [-0.3477, -0.4059, -0.2925], [0.0166, 0.1902, 0.1975],
     [-0.0412, 0.0267, -0.1364], [-0.1293, 0.0740, 0.1636], [0.0680, 0.3019, 0.1128], [0.0032, 0.0581, 0.0639],
     [-0.1251, 0.0927, 0.1699], [0.0060, -0.0633, 0.0005], [0.3477, 0.2275, 0.2950], [0.1984, 0.0913, 0.1861]],
    [-0.1835, -0.0868, -0.3360],
)
# The preview family (latent format) of each diffusion-transformer kind.
LATENT_FORMAT = {"flux-fill": "flux", "flux-kontext": "flux", "flux2-klein": "flux2", "qwen-edit": "qwen"}

TAESD_REPOS = {"sd": "madebyollin/taesd", "sdxl": "madebyollin/taesdxl", "flux": "madebyollin/taef1"}


def unpack_latents(kind: str, packed: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """A diffusion transformer's packed latents (1, tokens, channels), one token per 2×2 patch of the
    (height, width) = `grid` × 2 latent image, back to (1, C, 2·height, 2·width) in the space
    LATENT_RGB's factors apply to. FLUX.1 and Qwen-Image pack as (C, 2, 2) per token; FLUX.2 packs
    its 32 channels the same way, and its batch-norm normalisation is kept (the factors expect it)."""
    height, width = grid
    batch, tokens, channels = packed.shape
    x = packed.reshape(batch, height, width, channels // 4, 2, 2)  # (B, h, w, C, dy, dx)
    return x.permute(0, 3, 1, 4, 2, 5).reshape(batch, channels // 4, 2 * height, 2 * width)


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
    if source is None and family not in TAESD_REPOS:  # TAEF2 and TAEHV are not AutoencoderTiny models: linear previews there
        return None
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
        if x0 is None and hasattr(self._scheduler, "sigmas") and type(self._scheduler).__name__.startswith("FlowMatch"):
            # Flow matching predicts the velocity v = noise - x0 and steps x ← x + (σ_next - σ)·v, so
            # x0 = x - σ·v with the σ this step started from. One elementwise op on the token tensor,
            # queued on the device like the model's own work; the picture is made off this thread.
            model_output = kwargs.get("model_output", args[0] if args else None)
            sample = kwargs.get("sample", args[2] if len(args) > 2 else None)
            sigma = self._scheduler.sigmas[self._scheduler.step_index - 1]
            x0 = sample - sigma.to(sample.device, sample.dtype) * model_output
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
