"""Inpainting: repaint the masked part of a picture from a prompt.

Works with dedicated inpainting checkpoints (9-channel UNet: the mask and the masked image are
inputs of the model) and with ordinary ones (4-channel UNet: diffusers blends the known latents
back after every step), for SD 1.x/2.x and SDXL.

The steps, top to bottom:
1. Crop around the mask: its bounding box, grown by the feather radius and the context padding.
2. Pre-fill the hole from its surroundings and scale the crop to the model's native resolution.
3. Denoise (the Stable Diffusion step shared with uncrop, edit and colorize: sd.generate_crop),
   handing a preview of the predicted clean image to `on_step` after every step and
   raising `Cancelled` from the step callback when the token is set.
4. Scale the result back, correct its colour drift on the context pixels, and paste it back
   through the feathered mask: every pixel farther than the feather radius from the mask is
   bit-identical to the input.
"""

from __future__ import annotations

import time

from engines import imaging, preview, sources
from engines.api import CancelToken, EngineSpec, InputError, Request, Result, StepCallback, Task, check_common
from engines.dit import latent_format, prompt_warnings, step_for
from engines.sd import Crop, DEFAULT_MODELS, Timings, load_for, shared_params

DEFAULT_MODEL = DEFAULT_MODELS["inpaint"]

SPEC = EngineSpec(
    id="inpaint",
    title="Inpaint",
    tasks=(Task.INPAINT,),
    default_model=DEFAULT_MODEL,
    params=shared_params("padding", "feather", "grow", "color_match", "scheduler", "resolution", "preview"),
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
        sources.resolve_source(request.model or DEFAULT_MODEL, request.allow_pickle, purpose="inpaint")

    # ---- generation -------------------------------------------------------------------------

    def run(self, request: Request, on_step: StepCallback, cancel: CancelToken) -> Result:
        started = time.perf_counter()
        p = self.spec.values(request.params)
        cancel.raise_if_cancelled()
        loaded, device, dtype = load_for(request, "inpaint", DEFAULT_MODEL, on_step, cancel)
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
        previewer = preview.previewer_for(p["preview"], latent_format(loaded), device, dtype)
        crop = Crop(model_image=imaging.prefill(crop_image, crop_mask), model_mask=crop_mask, shown_under=crop_image, alpha=alpha, box=box)
        timings = Timings()
        generated, size = step_for(loaded)(loaded=loaded, request=request, params=p, crop=crop, previewer=previewer, on_step=on_step, cancel=cancel,
                                        timings=timings)

        # 4. Back into the picture.
        if p["color_match"]:
            generated = imaging.match_colors(generated, crop_image, measure=alpha == 0, apply=alpha > 0)
        result = imaging.paste_back(image, generated, box, alpha)
        seconds = time.perf_counter() - started
        return Result(
            image=result,
            box=box,
            seconds=seconds,
            info={"timings": timings.report(seconds), "warnings": prompt_warnings(loaded, request), "model": loaded.source.label, "size": size, "unet_channels": loaded.unet_channels, "family": loaded.family,
                  "preview": getattr(previewer, "name", "off"), "device": str(device), "dtype": str(dtype).replace("torch.", "")},
        )
