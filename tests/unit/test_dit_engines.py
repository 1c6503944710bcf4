"""The engines on today's models (FLUX.2 [klein], Qwen-Image-Edit, FLUX.1 Fill and Kontext), through
the same loading code as a real model, on tiny random-weight folders written by engines.testing_dit.

- Before paste-back the picture equals the bare diffusers pipeline called as its documentation
  shows, with the same inputs and seed (max difference 0).
- The engines keep every pixel outside the feathered mask bit-identical, preview every step with
  the unpacked clean-image estimate, stop within one step on cancel, and refuse a model for a task
  it cannot do with one sentence.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from engines import dit, kinds, models, preview, registry
from engines.api import CancelToken, Cancelled, ModelUnavailable, Request, Task
from engines.sd import Crop
from engines.testing_dit import DIT_KINDS, write_dit_model
from tests.conftest import blob_mask

SIZE = 64  # the crop and the working size: nothing is resized on either side, so the comparison is of the pipelines alone


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    return {kind: str(write_dit_model(tmp_path_factory.mktemp(kind), kind)) for kind in DIT_KINDS}


@pytest.fixture(autouse=True)
def small_qwen(monkeypatch):
    """Qwen-Image-Edit's pipelines work at about a megapixel whatever they are given (its VAE
    reference size and its inpainting size are module constants); 64² keeps the tiny runs quick.
    Both sides of every comparison run the same patched pipeline code."""
    from diffusers.pipelines.qwenimage import pipeline_qwenimage_edit_inpaint as inpaint
    from diffusers.pipelines.qwenimage import pipeline_qwenimage_edit_plus as plus

    monkeypatch.setattr(plus, "VAE_IMAGE_SIZE", SIZE * SIZE)
    real = inpaint.calculate_dimensions
    monkeypatch.setattr(inpaint, "calculate_dimensions", lambda area, ratio: real(SIZE * SIZE, ratio))


@pytest.fixture(scope="module")
def picture(photo):
    return np.asarray(Image.fromarray(photo).resize((SIZE, SIZE), Image.LANCZOS))


def bare(kind: str, purpose: str, folder: str):
    import diffusers

    extra = {}
    if kind == "qwen-edit" and not models.torchvision_available():
        extra["processor"] = models.load_qwen_vl_processor(f"{folder}/processor")
    cls = getattr(diffusers, kinds.DIT_PIPELINES[kind][purpose])
    pipe = cls.from_pretrained(folder, local_files_only=True, torch_dtype=torch.float32, **extra)
    pipe.set_progress_bar_config(disable=True)
    return pipe


CASES = [(kind, purpose) for kind in DIT_KINDS for purpose in kinds.DIT_PIPELINES[kind]]


@pytest.mark.parametrize("kind,purpose", CASES, ids=[f"{k}-{p}" for k, p in CASES])
def test_the_step_equals_bare_diffusers(folders, picture, kind, purpose):
    folder = folders[kind]
    mask = blob_mask(SIZE, SIZE, seed=5) if purpose == "inpaint" else None
    request = Request(task=Task.INPAINT if mask is not None else Task.EDIT, image=picture, mask=mask, prompt="a red door in a stone wall",
                      negative_prompt="blurry", guidance_scale=3.5, strength=1.0, steps=3, seed=77, model=folder, device="cpu", dtype="float32")
    loaded = models.load_pipeline(purpose, folder, torch.device("cpu"), torch.float32)
    crop = Crop(model_image=picture, model_mask=mask, shown_under=picture, alpha=np.ones((SIZE, SIZE), np.float32), box=(0, 0, SIZE, SIZE))
    ours, size = dit.generate_crop(loaded=loaded, request=request, params={"resolution": SIZE}, crop=crop, previewer=None,
                                   on_step=lambda step: None, cancel=CancelToken())
    assert size == (SIZE, SIZE)

    # As the model cards call them: Flux's guidance is its own (no negative); Qwen's is true CFG with a negative prompt.
    inputs = dict(prompt="a red door in a stone wall", num_inference_steps=3, generator=torch.Generator("cpu").manual_seed(77), output_type="np",
                  height=SIZE, width=SIZE)
    if kind == "qwen-edit":
        inputs.update(negative_prompt="blurry", true_cfg_scale=3.5)
    elif kind != "flux2-klein":
        inputs.update(guidance_scale=3.5)
    if kind == "flux-kontext":
        inputs.update(max_area=SIZE * SIZE, _auto_resize=False)
    if mask is not None:
        inputs.update(image=Image.fromarray(picture), mask_image=Image.fromarray(mask), strength=1.0)
    else:
        inputs.update(image=[Image.fromarray(picture)] if kind in ("flux2-klein", "qwen-edit") else Image.fromarray(picture))
    theirs = np.clip(np.round(bare(kind, purpose, folder)(**inputs).images[0] * 255.0), 0, 255).astype(np.uint8)
    assert np.abs(ours.astype(int) - theirs.astype(int)).max() == 0


def run(task: str, request: Request, cancel: CancelToken | None = None):
    steps = []
    engine = registry.get(task)
    engine.check(request)
    result = engine.run(request, steps.append, cancel or CancelToken())
    return result, [s for s in steps if not s.stage]


@pytest.mark.parametrize("kind", ["flux2-klein", "flux-fill", "flux-kontext", "qwen-edit"])
def test_inpaint_keeps_everything_outside_the_feathered_mask_and_previews_each_step(folders, photo, kind):
    image = np.asarray(Image.fromarray(photo).resize((160, 160)))
    mask = np.zeros((160, 160), np.uint8)
    mask[60:100, 50:110] = 255
    params = {"resolution": 128, "feather": 6, "grow": 2, "padding": 8}
    result, steps = run("inpaint", Request(task=Task.INPAINT, image=image, mask=mask, prompt="a window", steps=3, seed=1, model=folders[kind],
                                           device="cpu", dtype="float32", params=params))
    reach = np.zeros_like(mask, bool)
    reach[60 - 8 - 1 : 100 + 8 + 1, 50 - 8 - 1 : 110 + 8 + 1] = True  # grow + feather around the mask
    assert np.array_equal(result.image[~reach], image[~reach])
    assert not np.array_equal(result.image[60:100, 50:110], image[60:100, 50:110])
    assert [s.step for s in steps] == [1, 2, 3]
    picture = steps[-1].picture()
    assert picture.dtype == np.uint8 and picture.shape[2] == 3 and picture.std() > 0  # the unpacked estimate through the linear map


def test_uncrop_colorize_and_edit_run_on_a_transformer(folders, photo):
    image = np.asarray(Image.fromarray(photo).resize((96, 96)))
    common = dict(image=image, prompt="a sunny beach", steps=2, seed=3, device="cpu", dtype="float32")
    grown, _ = run("uncrop", Request(task=Task.UNCROP, model=folders["flux2-klein"], params={"resolution": 128, "right": 32}, **common))
    assert grown.image.shape == (96, 128, 3) and np.array_equal(grown.image[:, : 96 - 32], image[:, : 96 - 32])  # beyond the 32-px overlap

    grey = np.repeat(image.mean(axis=2, keepdims=True).astype(np.uint8), 3, axis=2)
    coloured, _ = run("colorize", Request(task=Task.COLORIZE, model=folders["qwen-edit"], params={"resolution": 128}, **{**common, "image": grey}))
    from engines.imaging import lightness

    assert np.abs(lightness(coloured.image) - lightness(grey)).max() < 1.0  # the photo's own lightness, colour from the model

    edited, _ = run("edit", Request(task=Task.EDIT, model=folders["flux-kontext"], params={"resolution": 128}, **common))
    assert edited.image.shape == image.shape and not np.array_equal(edited.image, image)


def test_cancel_stops_within_one_step(folders, picture):
    cancel = CancelToken()
    seen = []

    def on_step(step):
        if not step.stage:
            seen.append(step.step)
            cancel.cancel()

    engine = registry.get("inpaint")
    request = Request(task=Task.INPAINT, image=picture, mask=blob_mask(SIZE, SIZE), prompt="a door", steps=8, seed=1, model=folders["flux-fill"],
                      device="cpu", dtype="float32", params={"resolution": 128})
    with pytest.raises(Cancelled):
        engine.run(request, on_step, cancel)
    assert seen == [1]


def test_fill_is_refused_for_edits_with_what_it_can_do(folders, picture):
    request = Request(task=Task.EDIT, image=picture, prompt="make it winter", steps=2, model=folders["flux-fill"], device="cpu", dtype="float32")
    with pytest.raises(ModelUnavailable, match="FLUX.1 Fill model: it serves inpainting and uncropping, not instruction edits"):
        run("edit", request)


@pytest.mark.parametrize("kind", DIT_KINDS)
def test_the_preview_unpacks_the_latents_the_way_the_pipeline_packs_them(folders, kind):
    """Packing a (1, C, 2h, 2w) latent image the pipeline's own way and unpacking it gives it back."""
    import diffusers

    pipe_class = getattr(diffusers, kinds.DIT_PIPELINES[kind].get("instruct") or kinds.DIT_PIPELINES[kind]["inpaint"])
    channels = 32 if kind == "flux2-klein" else 16
    latents = torch.randn(1, channels, 8, 12)
    if kind == "flux2-klein":
        packed = pipe_class._pack_latents(pipe_class._patchify_latents(latents))
    else:
        packed = pipe_class._pack_latents(latents, 1, channels, 8, 12)
    grid = dit.grid_for(packed.shape[1], 12 / 8)
    assert torch.equal(preview.unpack_latents(preview.LATENT_FORMAT[kind], packed, grid), latents)


def test_group_offloading_gives_the_same_picture(folders, picture):
    """The lowest memory mode streams layers in as they run; the picture must not change (checked on the
    CPU, where the offload and onload devices are one: the hooks run all the same)."""
    mask = blob_mask(SIZE, SIZE, seed=2)
    request = Request(task=Task.INPAINT, image=picture, mask=mask, prompt="a door", steps=2, seed=9, model=folders["flux-fill"],
                      device="cpu", dtype="float32")
    crop = Crop(model_image=picture, model_mask=mask, shown_under=picture, alpha=np.ones((SIZE, SIZE), np.float32), box=(0, 0, SIZE, SIZE))
    pictures = []
    for memory in ("off", "lowest"):
        models.CACHE.clear()
        loaded = models.load_pipeline("inpaint", folders["flux-fill"], torch.device("cpu"), torch.float32, memory=memory)
        assert loaded.memory == memory
        pictures.append(dit.generate_crop(loaded=loaded, request=request, params={"resolution": SIZE}, crop=crop, previewer=None,
                                          on_step=lambda step: None, cancel=CancelToken())[0])
    models.CACHE.clear()
    assert np.array_equal(*pictures)


def test_many_runs_on_one_cached_pipeline_do_not_stack_scheduler_wrappers(folders, picture):
    """Each run wraps a fresh scheduler's step (for the x0 preview): the cached pipeline's scheduler never
    carries the wrappers of earlier runs (500 of them would reach Python's recursion limit)."""
    models.CACHE.clear()
    loaded = models.load_pipeline("inpaint", folders["flux-fill"], torch.device("cpu"), torch.float32)
    mask = blob_mask(SIZE, SIZE, seed=1)
    request = Request(task=Task.INPAINT, image=picture, mask=mask, prompt="a door", steps=1, seed=1, model=folders["flux-fill"],
                      device="cpu", dtype="float32")
    crop = Crop(model_image=picture, model_mask=mask, shown_under=picture, alpha=np.ones((SIZE, SIZE), np.float32), box=(0, 0, SIZE, SIZE))
    for _ in range(3):
        dit.generate_crop(loaded=loaded, request=request, params={"resolution": SIZE}, crop=crop, previewer=None,
                          on_step=lambda step: None, cancel=CancelToken())
        step = loaded.pipe.scheduler.step
        assert step.__wrapped__.__func__ is type(loaded.pipe.scheduler).step  # one wrapper, around the scheduler's own step
    models.CACHE.clear()
