"""Prompt-guided edits: "make it winter", on the whole picture or only where painted.

Two methods:
- instruct: InstructPix2Pix (an 8-channel UNet that sees the picture) follows an instruction; the
  image guidance says how closely to keep the original (higher = closer), the text guidance how
  strongly to follow the words.
- img2img: SDEdit with any ordinary SD model: the picture is noised to `strength` and denoised
  towards the prompt (lower strength = closer to the original).

Top to bottom: the working region is the whole picture, or with a painted mask the mask's box plus
context; it is scaled to the model's native resolution, edited with a preview per step, scaled
back, and with a mask pasted back through the feathered mask (pixels outside it bit-identical).
The edit itself is the Stable Diffusion step shared with inpaint, uncrop and colorize (sd.generate_crop).
"""

from __future__ import annotations

import time

from engines import imaging, preview, sources
from engines.api import CancelToken, EngineSpec, InputError, ParamSpec, Request, Result, StepCallback, Task, check_common
from engines.dit import KINDS as TRANSFORMER_KINDS, latent_format, prompt_warnings, purpose_for, step_for
from engines.sd import Crop, DEFAULT_MODELS, Timings, load_for, shared_params

MODELS = {method: DEFAULT_MODELS[method] for method in ("instruct", "img2img")}  # the method is the pipeline's purpose
GUIDANCE = (1.0, 20.0)

SPEC = EngineSpec(
    id="edit",
    title="Edit",
    tasks=(Task.EDIT,),
    default_model=MODELS["instruct"],
    strength_when=("method", "img2img"),
    default_strength=0.6,
    params=(
        ParamSpec("method", str, "instruct", "Method", "instruct: InstructPix2Pix follows an instruction; img2img: any SD model redraws the picture "
                  "towards the prompt.", choices=("instruct", "img2img")),
        ParamSpec("image_guidance", float, 1.5, "Image guidance", "InstructPix2Pix: how closely to keep the original (higher keeps it closer).",
                  1.0, 5.0, 0.1, when=("method", "instruct")),
        *shared_params("padding", "feather", "grow", "color_match", "scheduler", "resolution", "preview"),
    ),
)


class EditEngine:
    spec = SPEC

    def default_model_for(self, params: dict) -> str:
        """The model used when none is chosen: it depends on the method."""
        return MODELS[params.get("method", "instruct")]

    def check(self, request: Request) -> None:
        check_common(request, self.spec)
        p = self.spec.values(request.params)
        if not request.prompt.strip():
            raise InputError("Write what to change, like \"make it winter\".")
        if not GUIDANCE[0] <= request.guidance_scale <= GUIDANCE[1]:
            raise InputError(f"Text guidance must be between {GUIDANCE[0]:g} and {GUIDANCE[1]:g}, not {request.guidance_scale:g}.")
        sources.resolve_source(request.model or MODELS[p["method"]], request.allow_pickle, purpose=purpose_for(request, p["method"], MODELS[p["method"]]))

    def run(self, request: Request, on_step: StepCallback, cancel: CancelToken) -> Result:
        started = time.perf_counter()
        p = self.spec.values(request.params)
        cancel.raise_if_cancelled()
        purpose = purpose_for(request, p["method"], MODELS[p["method"]])  # a diffusion transformer follows the instruction either way
        loaded, device, dtype = load_for(request, purpose, MODELS[p["method"]], on_step, cancel)
        cancel.raise_if_cancelled()

        # The working region: the painted part with its context, or the whole picture.
        image = request.image
        box, alpha, masked = imaging.working_region(image, request.mask, p["grow"], p["feather"], p["padding"])
        crop = imaging.crop(image, box)
        if loaded.family in TRANSFORMER_KINDS:
            extra = None  # the transformers see the picture as a reference: no image guidance, no strength
        else:
            extra = {"image_guidance_scale": p["image_guidance"]} if purpose == "instruct" else {"strength": request.strength}
        previewer = preview.previewer_for(p["preview"], latent_format(loaded), device, dtype)

        timings = Timings()
        generated, size = step_for(loaded)(loaded=loaded, request=request, params=p,
                                        crop=Crop(model_image=crop, model_mask=None, shown_under=crop, alpha=alpha, box=box),
                                        previewer=previewer, on_step=on_step, cancel=cancel, extra=extra, timings=timings)
        if masked:
            if p["color_match"]:
                generated = imaging.match_colors(generated, crop, measure=alpha == 0, apply=alpha > 0)
            generated = imaging.paste_back(image, generated, box, alpha)
        seconds = time.perf_counter() - started
        return Result(
            image=generated,
            box=box,
            seconds=seconds,
            info={"timings": timings.report(seconds), "warnings": prompt_warnings(loaded, request), "model": loaded.source.label, "method": purpose, "size": size, "masked": masked, "device": str(device),
                  "dtype": str(dtype).replace("torch.", "")},
        )
