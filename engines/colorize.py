"""Colorization: grey and faded photos to colour, keeping every detail of the original.

The model only supplies colour. Top to bottom:
1. Lightness: the input's own Lab L at full resolution (sepia or faded colour is dropped: only
   the lightness is kept).
2. Working region: the whole picture, or the painted mask's box with context; the model sees it
   as a grey picture at its native resolution, with the person's colour hints painted in.
3. Colour: img2img (SDEdit) on that grey picture, guided by the prompt ("red car, blue sky"), with
   the Stable Diffusion step shared with inpaint, uncrop and edit (sd.generate_crop); previews show
   each step's colour already on the original lightness.
4. The result's Lab a/b, scaled up, pulled towards the hints near the strokes, scaled by the
   saturation setting, joined with the original L (chroma reduced where sRGB cannot show it,
   never the lightness), and with a mask pasted back through the feather.

No ControlNet is offered: the brightness ControlNet preset was never used by this engine, so it was
removed rather than downloaded for nothing. img2img on the grey picture is the method here.
"""

from __future__ import annotations

import time
from dataclasses import replace
from functools import partial

import numpy as np

from engines import imaging, preview, sources
from engines.api import CancelToken, EngineSpec, InputError, ParamSpec, Request, Result, StepCallback, StepPreview, Task, check_common
from engines.dit import latent_format, prompt_warnings, purpose_for, step_for
from engines.sd import Crop, DEFAULT_MODELS, Timings, load_for, shared_params

DEFAULT_MODEL = DEFAULT_MODELS["img2img"]

SPEC = EngineSpec(
    id="colorize",
    title="Colorize",
    tasks=(Task.COLORIZE,),
    default_model=DEFAULT_MODEL,
    default_strength=0.75,  # at 1 img2img would ignore the picture's structure; the colour must follow it
    params=(
        ParamSpec("saturation", float, 1.0, "Saturation", "How colourful the result is: 0 stays grey, 1 as generated, 2 twice as vivid.", 0.0, 2.0, 0.05),
        ParamSpec("hint_spread", int, 24, "Hint reach", "How far, in pixels, a colour hint pulls the colours around it.", 1, 256, 1),
        *shared_params("padding", "feather", "grow", "scheduler", "resolution", "preview"),
    ),
)


def colour_instruction(prompt: str) -> str:
    """What an edit model (FLUX.2 [klein], Qwen-Image-Edit, Kontext) is asked: to colour the photo
    without changing anything else, with the person's words as what the colours should be."""
    ask = "Colorize this black and white photo with natural, realistic colours; keep every shape, face and detail exactly as it is."
    return f"{ask} {prompt.strip()}" if prompt.strip() else ask


class ColorizeEngine:
    spec = SPEC

    def check(self, request: Request) -> None:
        check_common(request, self.spec)
        shape = request.image.shape[:2]
        hints = request.hints
        if hints is not None and (hints.dtype != np.uint8 or hints.shape != (*shape, 4)):
            raise InputError(f"The colour hints must be an RGBA picture of the image's size, {shape[1]}×{shape[0]}.")
        sources.resolve_source(request.model or DEFAULT_MODEL, request.allow_pickle, purpose=purpose_for(request, "img2img", DEFAULT_MODEL))

    def run(self, request: Request, on_step: StepCallback, cancel: CancelToken) -> Result:
        started = time.perf_counter()
        p = self.spec.values(request.params)
        cancel.raise_if_cancelled()
        purpose = purpose_for(request, "img2img", DEFAULT_MODEL)
        loaded, device, dtype = load_for(request, purpose, DEFAULT_MODEL, on_step, cancel)
        cancel.raise_if_cancelled()

        # 1–2. Lightness and the working region.
        image = request.image
        box, alpha, masked = imaging.working_region(image, request.mask, p["grow"], p["feather"], p["padding"])
        crop = imaging.crop(image, box)
        l_full = imaging.lightness(crop)
        grey = imaging.with_lightness(l_full, np.zeros((*l_full.shape, 2)))
        hint_ab = hint_strength = None
        model_input = grey
        if request.hints is not None and request.hints[..., 3].any():
            hint_ab, hint_strength = imaging.spread_hints(imaging.crop(request.hints, box), p["hint_spread"])
            model_input = imaging.with_lightness(l_full, hint_ab * hint_strength[..., None])

        # 3. Colour from the model; the previews already carry the original lightness. The conversion
        # happens when the preview is rendered, off the denoising thread; the callback only wraps it.
        def coloured_preview(render) -> np.ndarray:
            picture = render()
            h, w = picture.shape[:2]
            l_small = imaging.resize(l_full.astype(np.float32), (w, h))
            return imaging.with_lightness(l_small, imaging.rgb_to_lab(picture)[..., 1:] * p["saturation"])

        def show(step: StepPreview) -> None:
            on_step(step if step.render is None else replace(step, render=partial(coloured_preview, step.render)))

        previewer = preview.previewer_for(p["preview"], latent_format(loaded), device, dtype)
        crop = Crop(model_image=model_input, model_mask=None, shown_under=grey, alpha=np.ones(grey.shape[:2], np.float32), box=box)
        timings = Timings()
        # An edit model is asked in words to colour the photo; an SD model redraws the grey picture (img2img).
        model_request = replace(request, prompt=colour_instruction(request.prompt)) if purpose == "instruct" else request
        generated, size = step_for(loaded)(loaded=loaded, request=model_request, params=p, crop=crop, previewer=previewer, on_step=show,
                                           cancel=cancel, extra={"strength": request.strength} if purpose == "img2img" else None, timings=timings)

        # 4. Colour joined with the original lightness.
        ab = imaging.rgb_to_lab(generated)[..., 1:]
        if hint_ab is not None:
            ab = ab * (1 - hint_strength[..., None]) + hint_ab * hint_strength[..., None]
        coloured = imaging.with_lightness(l_full, ab * p["saturation"])
        result = imaging.paste_back(image, coloured, box, alpha) if masked else coloured
        seconds = time.perf_counter() - started
        return Result(image=result, box=box, seconds=seconds,
                      info={"timings": timings.report(seconds), "warnings": prompt_warnings(loaded, request), "model": loaded.source.label, "size": size, "masked": masked, "hints": hint_ab is not None,
                            "device": str(device), "dtype": str(dtype).replace("torch.", "")})
