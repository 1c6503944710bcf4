"""Single-file checkpoints as people own them: built at real structure from the key layouts of the
official releases (tests/data/single_file, copied from the project's reference specs), loaded with the
network off and an empty Hugging Face cache, and run through the engines.

Weights are zeros (sparse files: no disk, seconds to write) except a few "marked" tensors, which show
where the loader put them. SD 1.5 and SD 1.5 inpainting run in the normal suite; every family runs
with SANDCASTLE_SLOW_TESTS=1.
"""

import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage

from engines import checkpoints, models, registry, sources, testing
from engines.api import CancelToken, ModelUnavailable, Request, Task
from tests.conftest import blob_mask, textured

LAYOUTS = Path(__file__).resolve().parent.parent / "data" / "single_file"
EXPECTED_TYPES = {
    "sd15": "v1", "sd15-inpaint": "inpainting", "sd15-instruct": "instruct-pix2pix", "sd15-instruct-noema": "instruct-pix2pix",
    "sd2": "v2", "sd2-inpaint": "inpainting_v2", "sdxl": "xl_base", "sdxl-inpaint": "xl_inpaint",
}
SLOW = pytest.mark.skipif(not os.environ.get("SANDCASTLE_SLOW_TESTS"), reason="loads a 2–7 GB model; set SANDCASTLE_SLOW_TESTS=1")

# A tensor of each component, filled with a value of its own, and where diffusers keeps it.
MARKS = {
    "model.diffusion_model.input_blocks.0.0.bias": ("unet", "conv_in.bias", 0.5),
    "first_stage_model.decoder.conv_out.bias": ("vae", "decoder.conv_out.bias", 0.25),
    "cond_stage_model.transformer.text_model.final_layer_norm.bias": ("text_encoder", "final_layer_norm.bias", 0.125),
}


@pytest.fixture(autouse=True)
def offline_with_an_empty_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf-home"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    models.CACHE.clear()
    yield
    models.CACHE.clear()


def build(family: str, folder: Path, marks: dict | None = None) -> Path:
    return testing.write_checkpoint_from_layout(LAYOUTS / f"{family}.txt", folder / f"{family}.safetensors", marks=marks)


@pytest.mark.parametrize("family", sorted(EXPECTED_TYPES))
def test_each_real_layout_is_the_model_type_diffusers_names(family, tmp_path):
    from diffusers.loaders.single_file_utils import infer_diffusers_model_type

    path = build(family, tmp_path)
    shapes = {name: shape for name, (_, shape) in checkpoints.read_header(path).items()}
    assert infer_diffusers_model_type({k: torch.empty(s, device="meta") for k, s in shapes.items()}) == EXPECTED_TYPES[family]
    assert checkpoints.model_type(shapes) == EXPECTED_TYPES[family]
    kind = checkpoints.describe(path)
    assert kind.usable and (checkpoints.config_folder(kind.model_type) / "unet" / "config.json").is_file()


def request(task: Task, image, mask, model: Path, **kw) -> Request:
    params = {"scheduler": "DDIM", "resolution": 128, **kw.pop("params", {})}
    return Request(task, image, mask, prompt=kw.pop("prompt", "a red door"), steps=2, model=str(model), params=params, **kw)


def run(task: Task, req: Request):
    engine = registry.get(task.value)
    engine.check(req)
    steps = []
    result = engine.run(req, steps.append, CancelToken())
    assert steps[0].stage.startswith("Loading ") or steps[0].step == 1  # said when the model is read from disk
    assert [s.step for s in steps if not s.stage] == [1, 2]
    return result


def inpaint_keeps_the_outside(model: Path) -> None:
    image, mask = textured(160, 200, seed=3), blob_mask(160, 200, seed=4)
    result = run(Task.INPAINT, request(Task.INPAINT, image, mask, model, params={"feather": 4, "grow": 0}))
    far = ndimage.distance_transform_edt(mask < 128) > 4
    assert result.image.shape == image.shape and np.array_equal(result.image[far], image[far])


def test_an_sd15_checkpoint_loads_offline_and_inpaints_edits_and_colorizes(tmp_path):
    """The Civitai-format SD 1.5 file: 4-channel UNet, the DDPM buffers, no configuration beside it."""
    path = build("sd15", tmp_path, marks={key: value for key, (_, _, value) in MARKS.items()})
    loaded = models.load_pipeline("inpaint", str(path), torch.device("cpu"), torch.float32)
    assert loaded.unet_channels == 4 and loaded.native == 512 and loaded.family == "sd"
    for component, name, value in MARKS.values():
        state = getattr(loaded.pipe, component).state_dict()
        (key,) = [k for k in state if k == name or k.endswith("." + name)]  # transformers 5 drops CLIP's "text_model." prefix
        assert torch.all(state[key] == value), name
    # The real CLIP vocabulary, not a stand-in: these are the token ids SD 1.5 was trained with.
    assert loaded.pipe.tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert loaded.pipe.scheduler.config.prediction_type == "epsilon"

    inpaint_keeps_the_outside(path)
    grey = np.repeat(textured(128, 128, seed=6).mean(axis=2, keepdims=True).astype(np.uint8), 3, axis=2)
    colorized = run(Task.COLORIZE, request(Task.COLORIZE, grey, None, path, prompt="a photo"))
    assert colorized.image.shape == grey.shape
    edited = run(Task.EDIT, request(Task.EDIT, textured(128, 128), None, path, prompt="make it winter", params={"method": "img2img"}))
    assert edited.image.shape == (128, 128, 3)


def test_an_sd15_inpainting_checkpoint_inpaints_and_is_refused_for_img2img_before_loading(tmp_path, monkeypatch):
    path = build("sd15-inpaint", tmp_path)
    inpaint_keeps_the_outside(path)
    loaded = models.load_pipeline("inpaint", str(path), torch.device("cpu"), torch.float32)
    assert loaded.unet_channels == 9

    models.CACHE.clear()
    monkeypatch.setattr(models, "_load_single_file", lambda *a: pytest.fail("nothing may load for a refused file"))
    req = request(Task.COLORIZE, textured(64, 64), None, path, prompt="a photo")
    with pytest.raises(ModelUnavailable, match="sd15-inpaint.safetensors is a Stable Diffusion 1.x inpainting model: it serves "
                                               "inpainting and uncropping, not img2img edits and colorizing"):
        registry.get("colorize").check(req)
    with pytest.raises(ModelUnavailable, match="not img2img"):
        models.load_pipeline("img2img", str(path), torch.device("cpu"), torch.float32)


@pytest.mark.parametrize("keys, what", [
    ({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": (4, 320)}, "a LoRA"),
    ({"conditioner.embedders.0.model.transformer.resblocks.9.mlp.c_proj.bias": (1280,),
      "model.diffusion_model.input_blocks.0.0.weight": (384, 4, 3, 3)}, "an SDXL refiner"),
    ({"encoder.conv_in.weight": (128, 3, 3, 3), "decoder.conv_out.weight": (3, 128, 3, 3)}, "a VAE only"),
    ({"double_blocks.0.img_attn.norm.key_norm.scale": (128,), "img_in.weight": (3072, 128)}, "a FLUX.1 [schnell], Depth, Canny or other variant"),
])
def test_a_file_sandcastle_cannot_use_says_what_it_is(keys, what, tmp_path):
    from engines import services

    layout = tmp_path / "layout.txt"
    layout.write_text("".join(f"{k} F16 {s}\n" for k, s in keys.items()))
    path = testing.write_checkpoint_from_layout(layout, tmp_path / "mine.safetensors")
    status = services.model_status(str(path))
    assert not status.installed and status.unusable.startswith(f"mine.safetensors is {what}, which Sandcastle cannot use: ")
    with pytest.raises(ModelUnavailable, match=f"is {re.escape(what)}, which Sandcastle cannot use"):
        sources.resolve_source(str(path), purpose="inpaint")


def test_a_truncated_file_is_named_as_such(tmp_path):
    path = build("sd15", tmp_path)
    with path.open("r+b") as f:
        f.truncate(path.stat().st_size // 2)
    with pytest.raises(ModelUnavailable, match="sd15.safetensors is incomplete: .*was the download cut short"):
        sources.resolve_source(str(path), purpose="inpaint")


# ---- every family (slow) ----------------------------------------------------------------------

FAMILIES = {  # family: (task, params, native size, prediction type)
    "sd15-instruct": (Task.EDIT, {"method": "instruct"}, 512, "epsilon"),
    "sd15-instruct-noema": (Task.EDIT, {"method": "instruct"}, 512, "epsilon"),
    "sd2": (Task.INPAINT, {}, 768, "v_prediction"),
    "sd2-inpaint": (Task.UNCROP, {}, 512, "epsilon"),
    "sdxl": (Task.COLORIZE, {}, 1024, "epsilon"),
    "sdxl-inpaint": (Task.INPAINT, {}, 1024, "epsilon"),
}


@SLOW
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_family_loads_offline_and_runs(family, tmp_path):
    task, params, native, prediction = FAMILIES[family]
    path = build(family, tmp_path)
    purpose = {Task.EDIT: "instruct", Task.COLORIZE: "img2img"}.get(task, "inpaint")
    dtype = "bfloat16" if family.startswith("sdxl") else "float32"  # SDXL in float32 would take 14 GB besides the mapped file
    loaded = models.load_pipeline(purpose, str(path), torch.device("cpu"), getattr(torch, dtype))
    assert loaded.native == native and loaded.pipe.scheduler.config.prediction_type == prediction
    image = textured(128, 128, seed=1)
    mask = blob_mask(128, 128, seed=2) if task is Task.INPAINT else None
    if task is Task.UNCROP:
        params = {**params, "right": 32}
    result = run(task, request(task, image, mask, path, params=params, dtype=dtype))
    assert result.image.dtype == np.uint8
