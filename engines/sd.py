"""The Stable Diffusion step that inpaint, uncrop, edit and colorize share: one crop through a
diffusers pipeline (SD 1.x/2.x or SDXL), at the model's own resolution, with a preview per step.

Each engine decides what the crop is (`Crop`: what the model sees, the mask when it inpaints, what
previews are shown over, where the crop lies) and what to do with the result; this module loads
the pipeline for a request (`load_for`), runs the crop (`generate_crop`, keyword arguments only)
and says what the person should know about their prompt (`prompt_warnings`). The parameters these
engines share are declared once, in `SHARED_PARAMS`; each engine picks the ones it uses with
`shared_params`.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from engines import imaging, kinds, models, preview
from engines.api import CancelToken, ParamSpec, Request, SandcastleError, StepCallback, StepPreview

Box = tuple[int, int, int, int]

# The model each pipeline purpose loads when the person chose none.
# The SD engines import this module when they are created, on the worker thread while the window says the
# engine is loading: the pipeline code comes in now rather than during the first Generate (see the function).
models.import_pipeline_code()

DEFAULT_MODELS = {
    "inpaint": "stable-diffusion-v1-5/stable-diffusion-inpainting",
    "img2img": "stable-diffusion-v1-5/stable-diffusion-v1-5",
    "instruct": "timbrooks/instruct-pix2pix",
}

SHARED_PARAMS = {
    p.name: p
    for p in (
        ParamSpec("padding", int, 48, "Context padding", "Pixels of surrounding picture the model sees around the mask.", 0, 2048, 8),
        ParamSpec("feather", int, 8, "Feather radius", "Width in pixels of the soft edge where the result blends into the original.", 0, 256, 1),
        ParamSpec("grow", int, 4, "Grow mask", "Pixels added around the painted mask before generating.", 0, 256, 1),
        ParamSpec("color_match", bool, True, "Match colours", "Correct colour drift of the result, measured on the untouched surroundings."),
        ParamSpec("scheduler", str, "DPM++ 2M", "Scheduler", "The sampling method.", choices=models.SCHEDULERS),
        ParamSpec("resolution", int, 0, "Generation size", "Side in pixels of the area generated at once. Lower it if memory runs out.", 0, 2048, 64,
                  special_value="Model's own"),
        ParamSpec("preview", str, "auto", "Preview", "How each step is shown: auto uses TAESD when installed, else the linear map.", choices=("auto", "taesd", "linear", "off")),
    )
}


def shared_params(*names: str) -> tuple[ParamSpec, ...]:
    """The shared parameter specs called `names`, in that order."""
    return tuple(SHARED_PARAMS[name] for name in names)


@dataclass(frozen=True)
class Crop:
    """One region to generate, in the crop's own pixels."""

    model_image: np.ndarray  # what the model sees (with a mask: the hole already pre-filled)
    model_mask: np.ndarray | None  # 255 = repaint: inpainting; None: image-to-image (img2img, InstructPix2Pix)
    shown_under: np.ndarray  # what each step's preview is shown over
    alpha: np.ndarray  # how the preview blends over it (float 0–1)
    box: Box  # where the crop lies in the result picture, for the previews


@dataclass
class Timings:
    """Where an engine's time went, so the benchmark can report it apart from the model's own work:
    the pipeline calls, how long the step callback held the denoising thread each step, and the
    float32 re-decodes of a float16 VAE that returned NaN."""

    pipeline_s: float = 0.0
    callback_s: list[float] = field(default_factory=list)
    redecodes: int = 0
    redecode_s: float = 0.0

    def report(self, total_s: float) -> dict[str, float]:
        """The figures for Result.info["timings"]; `own_work_s` is the engine's crop, pre-fill, colour
        match and paste-back: everything but the pipeline and the re-decodes."""
        held = [s * 1000 for s in self.callback_s] or [0.0]
        return {"pipeline_s": round(self.pipeline_s, 4), "own_work_s": round(total_s - self.pipeline_s - self.redecode_s, 4),
                "callback_ms_median": round(statistics.median(held), 4), "callback_ms_max": round(max(held), 4),
                "float32_redecodes": self.redecodes, "float32_redecode_s": round(self.redecode_s, 4)}


def load_for(request: Request, purpose: str, default_model: str, on_step: StepCallback | None = None,
             cancel: CancelToken | None = None) -> tuple[models.LoadedPipeline, torch.device, torch.dtype]:
    """The pipeline for `purpose` ("inpaint", "img2img" or "instruct"), with the device, dtype and memory
    mode the request asks for; `default_model` when the request names none. When it must be read from
    disk first, `on_step` hears a "Loading …" stage (loading takes seconds the person should see), and
    any longer stage of it; `cancel` stops such a stage."""
    device = models.pick_device(request.device)
    model = request.model or default_model
    dtype = models.pick_dtype(device, request.dtype)
    if request.dtype is None and device.type in ("cuda", "mps") and kinds.dit_kind(model, request.allow_pickle):
        dtype = torch.bfloat16  # FLUX and Qwen-Image were trained in bfloat16; in float16 their activations overflow (MPS has it from macOS 14)
    if on_step is not None and not models.is_loaded(purpose, model, device, dtype, request.memory, request.allow_pickle, request.compile):
        on_step(StepPreview(request.job_id, 0, 0, None, (0, 0, 0, 0), stage=f"Loading {Path(model).name if Path(model).exists() else model}…"))
    def stage(text: str) -> None:
        if on_step is not None:
            on_step(StepPreview(request.job_id, 0, 0, None, (0, 0, 0, 0), stage=text))

    loaded = models.load_pipeline(purpose, model, device, dtype, request.memory, request.allow_pickle, request.compile, stage, cancel)
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
    *,
    loaded: models.LoadedPipeline,
    request: Request,
    params: dict[str, Any],
    crop: Crop,
    previewer: Any,
    on_step: StepCallback,
    cancel: CancelToken,
    passes: tuple[int, int] = (1, 1),
    offset: tuple[int, int] = (0, 0),
    extra: dict[str, Any] | None = None,
    timings: Timings | None = None,
) -> tuple[np.ndarray, tuple[int, int]]:
    """Run one crop through the pipeline at the model's own resolution and return the result at the
    crop's size (and the working size).

    With `crop.model_mask` it is inpainting (the crop's hole is pre-filled in `crop.model_image`);
    without, an image-to-image pipeline (img2img, InstructPix2Pix) whose own arguments come in
    `extra`. `params` are the engine's parameter values (it reads `resolution` and `scheduler`).
    Previews show the predicted picture over `crop.shown_under` through `crop.alpha`, one per step,
    tagged with `passes` = (this pass, of how many) and `offset` (where the input lies in the result).
    A cancel raises Cancelled from the step callback, so nothing is decoded after it
    (InstructPix2Pix has no interrupt flag at all). `timings`, when given, collects where the time went."""
    pipe = loaded.pipe
    device = pipe._execution_device
    height, width = crop.model_image.shape[:2]
    native = params["resolution"] or loaded.native
    if loaded.compiled:  # a static compile builds one program per size: use a few bucket sizes, never one per crop
        size = imaging.bucket_size(width, height, native, multiple=8 * int(pipe.vae_scale_factor))
    else:
        size = imaging.working_size(width, height, native, multiple=int(pipe.vae_scale_factor))
    work_image = imaging.resize(crop.model_image, size)
    preview_base = imaging.resize(crop.shown_under, size)
    preview_alpha = imaging.resize(crop.alpha, size)

    pipe.scheduler = models.make_scheduler(params["scheduler"], pipe.scheduler.config)
    x0 = preview.X0Capture(pipe.scheduler)
    last = [time.perf_counter()]
    final_latents: list[torch.Tensor] = []  # the last step's latents, to decode again in float32 if float16 fails
    timings = timings if timings is not None else Timings()
    callback_seconds = timings.callback_s

    if previewer is not None and preview.render_device(device) != device:
        previewer = preview.previewer_for(previewer.name, loaded.family, preview.render_device(device), torch.float32)

    def render(latents: torch.Tensor) -> np.ndarray:
        """The step's picture, made off the denoising thread: latents → RGB, blended over the crop."""
        return preview.compose(previewer(latents), preview_base, preview_alpha)

    def on_step_end(pipeline: Any, i: int, t: Any, tensors: dict) -> dict:
        # Runs on the denoising thread between two UNet calls: it only hands over (no picture is made
        # here; on a graphics card a 5 ms blend would be a sixth of a step).
        started = time.perf_counter()
        final_latents[:] = [tensors["latents"]]
        latents = preview.handed_over(x0.x0 if x0.x0 is not None else tensors["latents"])
        on_step(StepPreview(request.job_id, i + 1, pipeline.num_timesteps, None, crop.box, started - last[0], passes[0], passes[1], offset,
                            render=None if previewer is None else partial(render, latents)))
        last[0] = started
        callback_seconds.append(time.perf_counter() - started)
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
    if crop.model_mask is not None:
        work_mask = np.where(imaging.resize(crop.model_mask, size, Image.BILINEAR) >= 128, 255, 0).astype(np.uint8)
        inputs.update(mask_image=Image.fromarray(work_mask), height=size[1], width=size[0], strength=request.strength)
    inputs.update(extra or {})
    if loaded.compiled and size not in loaded.compiled_sizes:
        loaded.compiled_sizes.add(size)
        on_step(StepPreview(request.job_id, 0, request.steps, None, crop.box, pass_index=passes[0], passes=passes[1], offset=offset,
                            stage=f"Compiling the model for {size[0]}×{size[1]}: the first run at this size takes a minute or more…"))
    started = time.perf_counter()
    try:
        output = pipe(**inputs)
    except Exception as exc:
        if models.is_out_of_memory(exc):
            raise models.out_of_memory(device, size) from None
        raise
    timings.pipeline_s += time.perf_counter() - started
    decoded = output.images[0]
    if (not np.isfinite(decoded).all() or decoded.max() <= 0) and pipe.vae.dtype != torch.float32 and final_latents:
        started = time.perf_counter()
        decoded = decode_in_float32(pipe, final_latents[0])
        timings.redecodes += 1
        timings.redecode_s += time.perf_counter() - started
    if not np.isfinite(decoded).all():
        raise SandcastleError("The model produced an invalid picture (NaN) even when decoded in float32; try Precision float32 in Settings "
                              "or another model.")
    generated = np.clip(np.round(decoded * 255.0), 0, 255).astype(np.uint8)
    return imaging.resize(generated, (width, height)), size
