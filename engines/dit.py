"""The diffusion-transformer step on one crop: FLUX.2 [klein], Qwen-Image-Edit, FLUX.1 Fill and
FLUX.1 Kontext, run through diffusers' own pipelines as their documentation calls them.

It mirrors `sd.generate_crop` (same keyword arguments, same return), so an engine runs whichever its
model needs: the crop goes in at about a megapixel (multiples of 16, the transformers' 2×2 patches of
the VAE's 8× latents), every step hands its clean-image estimate over for a preview, a cancel stops
before the next step, and the picture comes back at the crop's size for the engine to paste back.

What "guidance" means differs per model, and the request's one number is given to each as its own:
FLUX.1 Fill and Kontext take it as their distilled (embedded) guidance and have no negative prompt;
FLUX.2 [klein] 4B is step-distilled and ignores it; Qwen-Image-Edit takes it as its true
classifier-free guidance scale, with the negative prompt (a single space when none is given, as
Qwen's own examples do: true CFG runs only with a negative prompt).
"""

from __future__ import annotations

import math
import time
from functools import partial
from typing import Any

import numpy as np
import torch
from PIL import Image

from engines import imaging, kinds, models, preview, sd
from engines.api import CancelToken, Request, SandcastleError, StepCallback, StepPreview

KINDS = tuple(kinds.DIT_PIPELINES)
MULTIPLE = 16  # the VAE's 8× times the transformer's 2×2 patches
TEXT_TOKENS = 512  # the pipelines' default max_sequence_length, stated so a reader sees what the text encoders read

# What the request's guidance scale is to each model, for the panel and for the pipeline call.
GUIDANCE = {
    "flux-fill": "distilled",  # FLUX.1 Fill [dev]: embedded guidance, 30 in BFL's examples
    "flux-kontext": "distilled",  # FLUX.1 Kontext [dev]: embedded guidance, 2.5 in BFL's examples
    "flux2-klein": "ignored",  # FLUX.2 [klein] 4B: step- and guidance-distilled (4 steps)
    "qwen-edit": "true-cfg",  # Qwen-Image-Edit: true CFG scale, 4 in Qwen's examples
}


def purpose_for(request: Request, purpose: str, default_model: str) -> str:
    """The pipeline purpose for this request's model: SD's img2img (edits by redrawing, colorizing)
    is the instruction pipeline on a diffusion transformer, which has no img2img of its own."""
    if purpose == "img2img" and kinds.dit_kind(request.model or default_model, request.allow_pickle):
        return "instruct"
    return purpose


def step_for(loaded: models.LoadedPipeline):
    """The step that runs this pipeline: this module's for a diffusion transformer, else SD's."""
    return generate_crop if loaded.family in KINDS else sd.generate_crop


def latent_format(loaded: models.LoadedPipeline) -> str:
    """The family the previewer is made for (the VAE's latent space)."""
    return preview.LATENT_FORMAT.get(loaded.family, loaded.family)


def prompt_warnings(loaded: models.LoadedPipeline, request: Request) -> list[str]:
    """CLIP's 77-token limit is an SD matter; the transformers read 512 tokens of T5 or Qwen."""
    return [] if loaded.family in KINDS else sd.prompt_warnings(loaded, request)


def grid_for(tokens: int, aspect: float) -> tuple[int, int]:
    """(rows, columns) of the 2×2-patch grid holding `tokens` patches nearest the picture's aspect
    (width / height). The pipelines choose the generated size themselves in places (Qwen's inpainting
    works at about a megapixel whatever it is given), so the grid is read from the latents."""
    best = (1, tokens)
    for rows in range(1, int(math.isqrt(tokens)) + 1):
        if tokens % rows:
            continue
        for r, c in ((rows, tokens // rows), (tokens // rows, rows)):
            if abs(math.log(c / r / aspect)) < abs(math.log(best[1] / best[0] / aspect)):
                best = (r, c)
    return best


def pipeline_inputs(kind: str, request: Request, size: tuple[int, int], image: Image.Image, mask: Image.Image | None) -> dict[str, Any]:
    """The arguments of the kind's pipeline for this request, besides the prompt, steps, seed and callback."""
    width, height = size
    inputs: dict[str, Any] = {"height": height, "width": width}
    if kind == "qwen-edit":
        inputs.update(negative_prompt=request.negative_prompt or " ", true_cfg_scale=request.guidance_scale)
    elif kind != "flux2-klein":
        inputs.update(guidance_scale=request.guidance_scale)
    if kind == "flux-kontext":  # Kontext would otherwise rescale to a megapixel and snap to its preferred sizes
        inputs.update(max_area=width * height, _auto_resize=False)
    if kind in ("flux-fill", "flux-kontext"):
        inputs.update(max_sequence_length=TEXT_TOKENS)
    if mask is not None:
        inputs.update(image=image, mask_image=mask, strength=request.strength)
    else:  # an instruction on the whole picture: the picture is the reference the edit starts from
        inputs.update(image=[image] if kind in ("flux2-klein", "qwen-edit") else image)
    return inputs


def generate_crop(
    *,
    loaded: models.LoadedPipeline,
    request: Request,
    params: dict[str, Any],
    crop: Any,
    previewer: Any,
    on_step: StepCallback,
    cancel: CancelToken,
    passes: tuple[int, int] = (1, 1),
    offset: tuple[int, int] = (0, 0),
    extra: dict[str, Any] | None = None,
    timings: Any = None,
) -> tuple[np.ndarray, tuple[int, int]]:
    """Run one crop (an `sd.Crop`) through the model's pipeline and return the result at the crop's
    size, with the working size. With `crop.model_mask` it is inpainting; without, an instruction
    edit of the whole crop. See sd.generate_crop for the rest; `extra` adds pipeline arguments."""
    pipe, kind = loaded.pipe, loaded.family
    height, width = crop.model_image.shape[:2]
    native = params.get("resolution") or loaded.native
    size = imaging.working_size(width, height, native, multiple=MULTIPLE)
    work_image = imaging.resize(crop.model_image, size)
    preview_base = imaging.resize(crop.shown_under, size)
    preview_alpha = imaging.resize(crop.alpha, size)
    work_mask = None
    if crop.model_mask is not None:
        work_mask = Image.fromarray(np.where(imaging.resize(crop.model_mask, size, Image.BILINEAR) >= 128, 255, 0).astype(np.uint8))

    # A fresh scheduler from the model's own config each run, as sd.generate_crop makes one: X0Capture wraps
    # its `step`, and wrapping the cached pipeline's scheduler again every run would stack one wrapper per
    # crop (an uncrop tile is one) until Python's recursion limit.
    pipe.scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config)
    x0 = preview.X0Capture(pipe.scheduler)
    last = [time.perf_counter()]
    latent_format = preview.LATENT_FORMAT[kind]
    callback_seconds = timings.callback_s if timings is not None else []

    def render(latents: torch.Tensor) -> np.ndarray:
        """The step's picture, made off the denoising thread: unpack, latents → RGB, blend over the crop."""
        grid = grid_for(latents.shape[1], size[0] / size[1])
        return preview.compose(previewer(preview.unpack_latents(latent_format, latents, grid)), preview_base, preview_alpha)

    def on_step_end(pipeline: Any, i: int, t: Any, tensors: dict) -> dict:
        # Between two transformer calls: hand the estimate over, nothing else (see sd.generate_crop).
        started = time.perf_counter()
        latents = preview.handed_over(x0.x0 if x0.x0 is not None else tensors["latents"])
        on_step(StepPreview(request.job_id, i + 1, pipeline.num_timesteps, None, crop.box, started - last[0], passes[0], passes[1], offset,
                            render=None if previewer is None else partial(render, latents)))
        last[0] = started
        callback_seconds.append(time.perf_counter() - started)
        cancel.raise_if_cancelled()
        return {}

    inputs = dict(prompt=request.prompt, num_inference_steps=request.steps, generator=torch.Generator("cpu").manual_seed(request.seed),
                  output_type="np", callback_on_step_end=on_step_end)
    inputs.update(pipeline_inputs(kind, request, size, Image.fromarray(work_image), work_mask))
    inputs.update(extra or {})
    started = time.perf_counter()
    try:
        output = pipe(**inputs)
    except Exception as exc:
        if models.is_out_of_memory(exc):
            raise models.out_of_memory(pipe._execution_device, size) from None
        raise
    if timings is not None:
        timings.pipeline_s += time.perf_counter() - started
    decoded = output.images[0]
    if not np.isfinite(decoded).all():
        raise SandcastleError(f"The model produced an invalid picture (NaN) in {str(pipe.transformer.dtype).replace('torch.', '')}; "
                              "try Precision bfloat16 or float32 in Settings.")
    generated = np.clip(np.round(decoded * 255.0), 0, 255).astype(np.uint8)
    return imaging.resize(generated, (width, height)), size
