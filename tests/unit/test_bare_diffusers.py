"""The SD step every SD engine runs (`sd.generate_crop`) gives exactly the picture the bare diffusers
pipeline gives, called the way its documentation shows, with the same inputs, scheduler and seed:
for every scheduler Sandcastle offers, for inpainting, img2img and InstructPix2Pix models.

What differs between the two is everything Sandcastle adds around the pipeline: the step callback that
hands previews over, the x0 capture wrapped around the scheduler's step, cancel checks, and building
the scheduler from the model's own config. None of it may change a pixel (max difference 0).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from engines import models, sd
from engines.api import CancelToken, Request, Task
from tests.conftest import blob_mask

SIZE = 256  # the tiny models' native size: no resizing on either side, so the comparison is of the pipelines alone


def bare_scheduler(name: str, config):
    """The scheduler as diffusers' documentation has a person swap it in."""
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler

    return {
        "DDIM": lambda: DDIMScheduler.from_config(config),
        "Euler ancestral": lambda: EulerAncestralDiscreteScheduler.from_config(config),
        "DPM++ 2M": lambda: DPMSolverMultistepScheduler.from_config(config),
        "DPM++ 2M Karras": lambda: DPMSolverMultistepScheduler.from_config(config, use_karras_sigmas=True),
    }[name]()


def bare_pipeline(purpose: str, folder):
    from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting, StableDiffusionInstructPix2PixPipeline

    cls = {"inpaint": AutoPipelineForInpainting, "img2img": AutoPipelineForImage2Image, "instruct": StableDiffusionInstructPix2PixPipeline}[purpose]
    return cls.from_pretrained(folder, local_files_only=True, safety_checker=None, feature_extractor=None, requires_safety_checker=False, torch_dtype=torch.float32)


CASES = [(purpose, scheduler) for purpose in ("inpaint", "img2img", "instruct") for scheduler in models.SCHEDULERS]


@pytest.mark.parametrize("purpose,scheduler", CASES, ids=[f"{p}-{s}" for p, s in CASES])
def test_the_sd_step_equals_bare_diffusers(model_dir, photo, purpose, scheduler):
    folder = str(model_dir(purpose))
    image = np.asarray(Image.fromarray(photo).resize((SIZE, SIZE)))
    mask = blob_mask(SIZE, SIZE, seed=3) if purpose == "inpaint" else None
    request = Request(task=Task.INPAINT if mask is not None else Task.EDIT, image=image, mask=mask, prompt="a lighthouse",
                      negative_prompt="blurry", guidance_scale=6.0, strength=0.8 if purpose == "img2img" else 1.0, steps=4, seed=1234,
                      model=folder, device="cpu", dtype="float32")
    extra = {"image_guidance_scale": 1.5} if purpose == "instruct" else {"strength": request.strength} if purpose == "img2img" else None
    models.CACHE.clear()  # a fresh pipeline: its scheduler config is the model's own, as the bare one's
    loaded = models.load_pipeline(purpose, folder, torch.device("cpu"), torch.float32)
    crop = sd.Crop(model_image=image, model_mask=mask, shown_under=image, alpha=np.zeros((SIZE, SIZE), np.float32), box=(0, 0, SIZE, SIZE))
    ours, size = sd.generate_crop(loaded=loaded, request=request, params={"resolution": 0, "scheduler": scheduler}, crop=crop,
                                  previewer=None, on_step=lambda step: None, cancel=CancelToken(), extra=extra)
    assert size == (SIZE, SIZE)

    pipe = bare_pipeline(purpose, folder)
    pipe.scheduler = bare_scheduler(scheduler, pipe.scheduler.config)
    inputs = dict(prompt="a lighthouse", negative_prompt="blurry", image=Image.fromarray(image), num_inference_steps=4, guidance_scale=6.0,
                  generator=torch.Generator("cpu").manual_seed(1234), output_type="np")
    if purpose == "inpaint":
        inputs.update(mask_image=Image.fromarray(mask), height=SIZE, width=SIZE, strength=1.0)
    inputs.update(extra or {})
    theirs = np.clip(np.round(pipe(**inputs).images[0] * 255.0), 0, 255).astype(np.uint8)
    assert np.abs(ours.astype(int) - theirs.astype(int)).max() == 0
