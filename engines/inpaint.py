"""Inpainting: repaint the masked part of a picture from a prompt.

Works with dedicated inpainting checkpoints (9-channel UNet: the mask and the masked image are
inputs of the model) and with ordinary ones (4-channel UNet: diffusers blends the known latents
back after every step), for SD 1.x/2.x and SDXL.

The steps, top to bottom:
1. Crop around the mask: its bounding box, grown by the feather radius and the context padding.
2. Pre-fill the hole from its surroundings and scale the crop to the model's native resolution.
3. Denoise, handing a preview of the predicted clean image to `on_step` after every step and
   raising `Cancelled` from the step callback when the token is set.
4. Scale the result back, correct its colour drift on the context pixels, and paste it back
   through the feathered mask: every pixel farther than the feather radius from the mask is
   bit-identical to the input.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from PIL import Image

from engines import imaging, models, preview
from engines.api import (
    CancelToken,
    EngineSpec,
    InputError,
    OutOfMemory,
    ParamSpec,
    Request,
    Result,
    SandcastleError,
    StepCallback,
    StepPreview,
    Task,
    check_common,
)

DEFAULT_MODEL = "stable-diffusion-v1-5/stable-diffusion-inpainting"

SPEC = EngineSpec(
    id="inpaint",
    title="Inpaint",
    tasks=(Task.INPAINT,),
    default_model=DEFAULT_MODEL,
    params=(
        ParamSpec("padding", int, 48, "Context padding", "Pixels of surrounding picture the model sees around the mask.", 0, 2048, 8),
        ParamSpec("feather", int, 8, "Feather radius", "Width in pixels of the soft edge where the result blends into the original.", 0, 256, 1),
        ParamSpec("grow", int, 4, "Grow mask", "Pixels added around the painted mask before generating.", 0, 256, 1),
        ParamSpec("color_match", bool, True, "Match colours", "Correct colour drift of the result, measured on the untouched surroundings."),
        ParamSpec("scheduler", str, "DPM++ 2M", "Scheduler", "The sampling method.", choices=models.SCHEDULERS),
        ParamSpec("resolution", int, 0, "Generation size", "Side in pixels of the area generated at once. Lower it if memory runs out.", 0, 2048, 64,
                  special_value="Model's own"),
        ParamSpec("preview", str, "auto", "Preview", "How each step is shown: auto uses TAESD when installed, else the linear map.", choices=("auto", "taesd", "linear", "off")),
    ),
)


class InpaintEngine:
    spec = SPEC

    # ---- validation: cheap, before any model is touched -------------------------------------

    def check(self, request: Request) -> None:
        check_common(request, self.spec)
        if request.mask is None:
            raise InputError("Paint a mask over the part of the picture to repaint first.")
        if not imaging.binary(request.mask).any():
            raise InputError("The mask is empty: paint over the part of the picture to repaint.")
        resolution = request.params.get("resolution", 0)
        if 0 < resolution < 128:
            raise InputError(f"Generation size must be 0 (the model's own) or at least 128 pixels, not {resolution}.")
        models.resolve_source(request.model or DEFAULT_MODEL, request.allow_pickle)

    # ---- generation -------------------------------------------------------------------------

    def run(self, request: Request, on_step: StepCallback, cancel: CancelToken) -> Result:
        started = time.perf_counter()
        p = {**self.spec.defaults(), **request.params}
        cancel.raise_if_cancelled()
        loaded, device, dtype = load_for(request)
        cancel.raise_if_cancelled()

        # 1. The working region. The box holds the grown mask, its feather and the context, so every
        # mask operation works on the crop alone (exactly: no mask pixel lies outside it).
        image = request.image
        height, width = image.shape[:2]
        bbox = imaging.mask_bbox(request.mask, 128)
        box = imaging.expand_box(bbox, p["grow"] + p["feather"] + p["padding"], width, height)
        crop_image = imaging.crop(image, box)
        crop_mask = imaging.grow_mask(imaging.crop(request.mask, box), p["grow"])
        alpha = imaging.feather_mask(crop_mask, p["feather"])

        # 2–3. Generate at the model's resolution, previewing every step.
        previewer = preview.previewer_for(p["preview"], loaded.family, device, dtype)
        generated, size = generate_crop(
            loaded, request, p, imaging.prefill(crop_image, crop_mask), crop_mask, crop_image, alpha, previewer, box, on_step, cancel
        )

        # 4. Back into the picture.
        if p["color_match"]:
            generated = imaging.match_colors(generated, crop_image, measure=alpha == 0, apply=alpha > 0)
        result = imaging.paste_back(image, generated, box, alpha)
        return Result(
            image=result,
            box=box,
            seconds=time.perf_counter() - started,
            info={"warnings": prompt_warnings(loaded, request), "model": loaded.source.label, "size": size, "unet_channels": loaded.unet_channels, "family": loaded.family,
                  "preview": getattr(previewer, "name", "off"), "device": str(device), "dtype": str(dtype).replace("torch.", "")},
        )


# ---- shared with the engines built on the same pipelines (uncrop, edit, colorize) -----------------------------------


def load_for(request: Request, purpose: str = "inpaint", default_model: str = DEFAULT_MODEL) -> tuple[models.LoadedPipeline, torch.device, torch.dtype]:
    """The pipeline for `purpose`, with the device, dtype and memory mode the request asks for."""
    device = models.pick_device(request.device)
    dtype = models.pick_dtype(device, request.dtype)
    loaded = models.load_pipeline(purpose, request.model or default_model, device, dtype, request.memory, request.allow_pickle, request.compile)
    return loaded, device, dtype


def prompt_warnings(loaded: models.LoadedPipeline, request: Request) -> list[str]:
    """What the person should know about their words: CLIP reads at most 77 tokens, the rest is dropped."""
    warnings = []
    tokenizer = getattr(loaded.pipe, "tokenizer", None)
    for label, text in (("prompt", request.prompt), ("negative prompt", request.negative_prompt)):
        if tokenizer is None or not text:
            continue
        ids = tokenizer(text, truncation=False).input_ids
        if len(ids) > tokenizer.model_max_length:
            kept = tokenizer.decode(ids[1 : tokenizer.model_max_length - 1]).split()
            warnings.append(f"The {label} is longer than the text encoder reads ({len(ids)} tokens, at most {tokenizer.model_max_length}): "
                            f"only the first {len(kept)} words or so count, up to “{' '.join(kept[-3:])}”.")
    return warnings


def decode_in_float32(pipe: Any, latents: torch.Tensor) -> np.ndarray:
    """Decode final latents with the VAE temporarily in float32: the SD 1.x/2.x VAE overflows in
    float16 on some pictures and returns NaN (shown as black)."""
    vae = pipe.vae
    original = vae.dtype
    vae.to(dtype=torch.float32)
    try:
        with torch.no_grad():
            scaled = latents.to(device=vae.device, dtype=torch.float32) / vae.config.scaling_factor
            decoded = vae.decode(scaled, return_dict=False)[0]
        return pipe.image_processor.postprocess(decoded, output_type="np")[0]
    finally:
        vae.to(dtype=original)


def generate_crop(
    loaded: models.LoadedPipeline,
    request: Request,
    p: dict[str, Any],
    model_image: np.ndarray,
    model_mask: np.ndarray | None,
    shown_under: np.ndarray,
    alpha: np.ndarray,
    previewer: Any,
    box: tuple[int, int, int, int],
    on_step: StepCallback,
    cancel: CancelToken,
    passes: tuple[int, int] = (1, 1),
    offset: tuple[int, int] = (0, 0),
    extra: dict[str, Any] | None = None,
) -> tuple[np.ndarray, tuple[int, int]]:
    """Run one crop through the pipeline at the model's own resolution and return the result at the
    crop's size (and the working size). With `model_mask` it is inpainting (the crop's hole is
    pre-filled in `model_image`); without, an image-to-image pipeline (img2img, InstructPix2Pix)
    whose own arguments come in `extra`. Previews show the predicted picture over `shown_under`
    through `alpha`, one per step; a cancel raises Cancelled from the step callback, so nothing is
    decoded after it (InstructPix2Pix has no interrupt flag at all)."""
    pipe = loaded.pipe
    device = pipe._execution_device
    height, width = model_image.shape[:2]
    size = imaging.working_size(width, height, p["resolution"] or loaded.native, multiple=int(pipe.vae_scale_factor))
    work_image = imaging.resize(model_image, size)
    preview_base = imaging.resize(shown_under, size)
    preview_alpha = imaging.resize(alpha, size)

    pipe.scheduler = models.make_scheduler(p["scheduler"], pipe.scheduler.config)
    x0 = preview.X0Capture(pipe.scheduler)
    last = [time.perf_counter()]
    final_latents: list[torch.Tensor] = []  # the last step's latents, to decode again in float32 if float16 fails

    def on_step_end(pipeline: Any, i: int, t: Any, tensors: dict) -> dict:
        now = time.perf_counter()
        final_latents[:] = [tensors["latents"]]
        shown = None
        if previewer is not None:
            latents = x0.x0 if x0.x0 is not None else tensors["latents"]
            shown = preview.compose(previewer(latents), preview_base, preview_alpha)
        on_step(StepPreview(request.job_id, i + 1, pipeline.num_timesteps, shown, box, now - last[0], passes[0], passes[1], offset))
        last[0] = now
        cancel.raise_if_cancelled()  # diffusers would still decode after an interrupt; raising skips that
        return {}

    inputs = dict(
        prompt=request.prompt,
        negative_prompt=request.negative_prompt or None,
        image=Image.fromarray(work_image),
        num_inference_steps=request.steps,
        guidance_scale=request.guidance_scale,
        generator=torch.Generator("cpu").manual_seed(request.seed),
        output_type="np",
        callback_on_step_end=on_step_end,
    )
    if model_mask is not None:
        work_mask = np.where(imaging.resize(model_mask, size, Image.BILINEAR) >= 128, 255, 0).astype(np.uint8)
        inputs.update(mask_image=Image.fromarray(work_mask), height=size[1], width=size[0], strength=request.strength)
    inputs.update(extra or {})
    try:
        output = pipe(**inputs)
    except Exception as exc:
        if models.is_out_of_memory(exc):
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            raise OutOfMemory(
                f"The {device.type.upper()} ran out of memory generating at {size[0]}×{size[1]}: "
                "lower Generation size, or set Low-memory mode to lowest in Settings."
            ) from None
        raise
    decoded = output.images[0]
    if (not np.isfinite(decoded).all() or decoded.max() <= 0) and pipe.vae.dtype != torch.float32 and final_latents:
        decoded = decode_in_float32(pipe, final_latents[0])
    if not np.isfinite(decoded).all():
        raise SandcastleError("The model produced an invalid picture (NaN) even when decoded in float32; try Precision float32 in Settings "
                              "or another model.")
    generated = np.clip(np.round(decoded * 255.0), 0, 255).astype(np.uint8)
    return imaging.resize(generated, (width, height)), size
