import numpy as np
import pytest
from scipy import ndimage

from engines import registry
from engines.api import CancelToken, Cancelled, InputError, Request, Task
from tests.conftest import blob_mask

METHODS = {"instruct": "instruct", "img2img": "img2img"}


@pytest.fixture(scope="module")
def engine():
    return registry.get("edit")


def request(photo, model, method, mask=None, **kw):
    params = {"method": method, "scheduler": "DDIM", **kw.pop("params", {})}
    return Request(Task.EDIT, photo, mask, prompt=kw.pop("prompt", "make it winter"), steps=kw.pop("steps", 3), seed=kw.pop("seed", 5),
                   strength=kw.pop("strength", 0.7), model=str(model), params=params, **kw)


@pytest.mark.parametrize("method", ["instruct", "img2img"])
def test_masked_edit_leaves_the_outside_bit_identical(engine, model_dir, photo, method):
    mask = blob_mask(512, 512, seed=9)
    req = request(photo, model_dir(METHODS[method]), method, mask, params={"grow": 0, "feather": 8})
    engine.check(req)
    steps = []
    result = engine.run(req, steps.append, CancelToken())
    far = ndimage.distance_transform_edt(mask < 128) > 8
    assert np.array_equal(result.image[far], photo[far])
    assert not np.array_equal(result.image[mask >= 128], photo[mask >= 128])
    steps = [s for s in steps if not s.stage]  # "Loading …" comes first when the model was not in memory
    assert len(steps) == (3 if method == "instruct" else 2)  # img2img runs strength × steps
    assert all(s.picture() is not None for s in steps)


@pytest.mark.parametrize("method", ["instruct", "img2img"])
def test_whole_picture_edit_keeps_the_size(engine, model_dir, method):
    picture = np.random.default_rng(0).integers(0, 255, (871, 1237, 3), dtype=np.uint8)
    result = engine.run(request(picture, model_dir(METHODS[method]), method), lambda s: None, CancelToken())
    assert result.image.shape == picture.shape and result.box == (0, 0, 1237, 871)
    assert result.info["size"][0] % 8 == 0 and result.info["size"][0] * result.info["size"][1] <= 300 * 300


@pytest.mark.parametrize("method", ["instruct", "img2img"])
def test_same_seed_same_result(engine, model_dir, photo, method):
    a = engine.run(request(photo, model_dir(METHODS[method]), method, seed=11), lambda s: None, CancelToken()).image
    b = engine.run(request(photo, model_dir(METHODS[method]), method, seed=11), lambda s: None, CancelToken()).image
    c = engine.run(request(photo, model_dir(METHODS[method]), method, seed=12), lambda s: None, CancelToken()).image
    assert np.array_equal(a, b) and not np.array_equal(a, c)


@pytest.mark.parametrize("method", ["instruct", "img2img"])
def test_cancel_stops_within_one_step(engine, model_dir, photo, method):
    """InstructPix2Pix's pipeline has no interrupt flag; raising from the step callback stops it anyway."""
    from engines import models
    import torch

    folder = model_dir(METHODS[method])
    unet = models.load_pipeline(method, str(folder), torch.device("cpu"), torch.float32).pipe.unet
    calls = [0]
    handle = unet.register_forward_pre_hook(lambda *a: calls.__setitem__(0, calls[0] + 1))
    token, seen = CancelToken(), []

    def on_step(step):
        if step.stage:  # "Loading …" when the model was not in memory
            return
        seen.append(step.step)
        if step.step == 2:
            token.cancel()

    try:
        with pytest.raises(Cancelled):
            engine.run(request(photo, folder, method, steps=10, strength=1.0), on_step, token)
    finally:
        handle.remove()
    assert seen == [1, 2] and calls[0] == 2


def test_refusals_are_clear(engine, model_dir, photo):
    folder = model_dir("instruct")
    for kw, words in [
        (dict(strength=0.0), "Strength must be above 0"),
        (dict(guidance_scale=25.0), "Text guidance must be between 1 and 20"),
        (dict(guidance_scale=0.5), "Text guidance must be between 1 and 20"),
        (dict(params={"image_guidance": 0.5}), "Image guidance must be at least 1"),
        (dict(params={"image_guidance": 7}), "Image guidance must be at most 5"),
        (dict(prompt="  "), "Write what to change"),
        (dict(mask=np.zeros((100, 100), np.uint8)), "same size"),
    ]:
        with pytest.raises(InputError, match=words):
            engine.check(request(photo, folder, "instruct", **kw))


def test_the_wrong_kind_of_model_is_named(engine, model_dir, photo):
    from engines.api import ModelUnavailable

    with pytest.raises(ModelUnavailable, match="not an InstructPix2Pix model"):
        engine.run(request(photo, model_dir("img2img"), "instruct"), lambda s: None, CancelToken())
