import numpy as np
import pytest
import torch
from scipy import ndimage

from engines import registry
from engines.api import CancelToken, Cancelled, InputError, ModelUnavailable, OutOfMemory, Request, Task
from tests.conftest import blob_mask, textured

STEPS = 4


@pytest.fixture(scope="module")
def engine():
    return registry.get("inpaint")


def request(image, mask, model, **kw):
    params = {"scheduler": "DDIM", **kw.pop("params", {})}
    return Request(Task.INPAINT, image, mask, prompt="a red door", steps=kw.pop("steps", STEPS), model=str(model), params=params, **kw)


def run(engine, req, cancel=None):
    steps = []
    result = engine.run(req, steps.append, cancel or CancelToken())
    return result, [s for s in steps if not s.stage]  # "Loading …" comes first when the model was not in memory


@pytest.mark.parametrize("kind", ["inpaint", "img2img", "sd2", "sdxl-inpaint", "sdxl"])
def test_inpaint_changes_only_the_mask_and_its_feather(engine, model_dir, kind):
    h, w = 871, 1237
    image, mask = textured(h, w), blob_mask(h, w, seed=5)
    req = request(image, mask, model_dir(kind), params={"grow": 0, "feather": 8})
    engine.check(req)
    result, steps = run(engine, req)
    assert result.image.shape == image.shape and result.image.dtype == np.uint8
    far = ndimage.distance_transform_edt(mask < 128) > 8
    assert np.array_equal(result.image[far], image[far])
    inside = mask >= 128
    assert np.abs(result.image[inside].astype(int) - image[inside]).mean() > 5
    assert [s.step for s in steps] == list(range(1, STEPS + 1)) and all(s.total == STEPS for s in steps)
    x, y, bw, bh = result.box
    assert all(s.box == result.box and s.picture() is not None for s in steps)
    assert result.info["unet_channels"] == (9 if kind.endswith("inpaint") else 4)


def test_large_photo_keeps_everything_beyond_grow_plus_feather(engine, model_dir):
    image = textured(3000, 4000, seed=2)
    mask = np.zeros((3000, 4000), np.uint8)
    mask[1200:1500, 2000:2600] = 255
    result, _ = run(engine, request(image, mask, model_dir("inpaint"), steps=2, params={"grow": 4, "feather": 12}))
    far = ndimage.distance_transform_edt(mask < 128) > 16
    assert np.array_equal(result.image[far], image[far])
    assert result.info["size"][0] % 8 == 0 and result.info["size"][1] % 8 == 0


def test_same_seed_same_picture_other_seed_other_picture(engine, model_dir, photo):
    mask = blob_mask(512, 512, seed=1)
    a, _ = run(engine, request(photo, mask, model_dir(), seed=7))
    b, _ = run(engine, request(photo, mask, model_dir(), seed=7))
    c, _ = run(engine, request(photo, mask, model_dir(), seed=8))
    assert np.array_equal(a.image, b.image)
    assert not np.array_equal(a.image, c.image)


@pytest.mark.parametrize("scheduler", ["DDIM", "Euler ancestral", "DPM++ 2M", "DPM++ 2M Karras"])
def test_every_scheduler_runs_and_previews_every_step(engine, model_dir, photo, scheduler):
    result, steps = run(engine, request(photo, blob_mask(512, 512), model_dir(), steps=5, params={"scheduler": scheduler}))
    assert len(steps) == 5


def test_guidance_and_negative_prompt_change_the_result(engine, model_dir, photo):
    mask = blob_mask(512, 512, seed=2)
    base, _ = run(engine, request(photo, mask, model_dir(), guidance_scale=7.5))
    more, _ = run(engine, request(photo, mask, model_dir(), guidance_scale=15.0))
    negative, _ = run(engine, request(photo, mask, model_dir(), guidance_scale=7.5, negative_prompt="blurry"))
    assert not np.array_equal(base.image, more.image)
    assert not np.array_equal(base.image, negative.image)


def test_cancel_stops_within_one_step_and_returns_nothing(engine, model_dir, photo):
    token = CancelToken()
    seen = []
    unet = engine_unet(model_dir())
    calls = count_calls(unet)

    def on_step(step):
        if step.stage:  # "Loading …" when the model was not in memory
            return
        seen.append(step.step)
        if step.step == 2:
            token.cancel()

    with pytest.raises(Cancelled):
        engine.run(request(photo, blob_mask(512, 512), model_dir(), steps=10), on_step, token)
    assert seen == [1, 2]
    assert calls() == 2  # the UNet ran for steps 1 and 2 only: nothing after the cancel


def test_cancel_before_start_does_no_work(engine, model_dir, photo):
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        engine.run(request(photo, blob_mask(512, 512), model_dir()), lambda s: None, token)


def engine_unet(folder):
    from engines import models

    return models.load_pipeline("inpaint", str(folder), torch.device("cpu"), torch.float32).pipe.unet


def count_calls(module):
    count = [0]
    handle = module.register_forward_pre_hook(lambda *a: count.__setitem__(0, count[0] + 1))

    def calls():
        handle.remove()
        return count[0]

    return calls


def test_input_errors_are_one_clear_sentence(engine, model_dir, photo):
    folder = model_dir()
    cases = [
        (dict(mask=None), "Paint a mask"),
        (dict(mask=np.zeros((512, 512), np.uint8)), "mask is empty"),
        (dict(mask=np.full((500, 512), 255, np.uint8)), "512×500 but the image is 512×512"),
        (dict(steps=0), "Steps"),
        (dict(strength=0.0), "Strength"),
        (dict(guidance_scale=-1.0), "Guidance"),
        (dict(params={"feather": -3}), "Feather radius must be at least 0"),
        (dict(params={"scheduler": "Heun"}), "Scheduler must be one of"),
        (dict(params={"colour": 1}), "no setting called 'colour'"),
        (dict(image=photo[..., 0].copy()), "RGB"),
    ]
    for change, words in cases:
        kw = dict(mask=blob_mask(512, 512))
        kw.update(change)
        image = kw.pop("image", photo)
        req = request(image, kw.pop("mask"), folder, **kw)
        with pytest.raises(InputError) as err:
            engine.check(req)
        assert words in str(err.value), (change, str(err.value))
        assert str(err.value).count("\n") == 0


def test_missing_model_is_reported_before_any_work(engine, photo, tmp_path):
    with pytest.raises(ModelUnavailable, match="no model folder"):
        engine.check(request(photo, blob_mask(512, 512), tmp_path / "nope"))


def test_out_of_memory_says_what_to_lower(engine, model_dir, photo):
    unet = engine_unet(model_dir())

    def explode(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    handle = unet.register_forward_pre_hook(explode)
    try:
        with pytest.raises(OutOfMemory, match="lower Generation size"):
            run(engine, request(photo, blob_mask(512, 512), model_dir()))
    finally:
        handle.remove()


def test_colour_matching_is_on_by_default_and_can_be_turned_off(engine, model_dir, photo):
    mask = blob_mask(512, 512, seed=4)
    on, _ = run(engine, request(photo, mask, model_dir()))
    off, _ = run(engine, request(photo, mask, model_dir(), params={"color_match": False}))
    assert not np.array_equal(on.image, off.image)


def test_every_scheduler_gives_the_same_picture_for_the_same_seed(engine, model_dir, photo):
    """Euler ancestral draws noise every step: the pipeline passes it the seeded generator only when the
    (previewing) step shows that it takes one."""
    for scheduler in ("Euler ancestral", "DPM++ 2M"):
        a, _ = run(engine, request(photo, blob_mask(512, 512), model_dir(), seed=11, params={"scheduler": scheduler}))
        b, _ = run(engine, request(photo, blob_mask(512, 512), model_dir(), seed=11, params={"scheduler": scheduler}))
        assert np.array_equal(a.image, b.image), scheduler


def test_dpm_2m_after_dpm_2m_karras_uses_no_karras_sigmas(engine, model_dir, photo):
    from engines import models

    run(engine, request(photo, blob_mask(512, 512), model_dir(), params={"scheduler": "DPM++ 2M Karras"}))
    plain, _ = run(engine, request(photo, blob_mask(512, 512), model_dir(), seed=5, params={"scheduler": "DPM++ 2M"}))
    loaded = models.load_pipeline("inpaint", str(model_dir()), torch.device("cpu"), torch.float32)
    assert loaded.pipe.scheduler.config.use_karras_sigmas is False
    models.CACHE.clear()  # a fresh pipeline, whose scheduler never was Karras, gives the same picture
    fresh, _ = run(engine, request(photo, blob_mask(512, 512), model_dir(), seed=5, params={"scheduler": "DPM++ 2M"}))
    assert np.array_equal(plain.image, fresh.image)
