import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from engines import imaging, registry
from engines.api import CancelToken, InputError, Request, Task
from tests.conftest import blob_mask


@pytest.fixture(scope="module")
def engine():
    return registry.get("colorize")


@pytest.fixture(scope="module")
def grey_photo(photo):
    """A real photograph with its colour removed (its own lightness, no chroma)."""
    return imaging.with_lightness(imaging.lightness(photo), np.zeros((*photo.shape[:2], 2)))


def request(image, model, **kw):
    return Request(Task.COLORIZE, image, kw.pop("mask", None), prompt="an astronaut in an orange suit", steps=4, strength=0.8, seed=2,
                   model=str(model), params={"scheduler": "DDIM", **kw.pop("params", {})}, **kw)


def test_lightness_is_the_inputs_and_colour_appears(engine, model_dir, grey_photo):
    steps = []
    req = request(grey_photo, model_dir("img2img"))
    engine.check(req)
    result = engine.run(req, steps.append, CancelToken()).image
    difference = np.abs(imaging.lightness(result) - imaging.lightness(grey_photo))
    assert difference.max() <= 100 / 255  # within 1/255 of the lightness range after the sRGB round trip
    chroma = np.hypot(*np.moveaxis(imaging.rgb_to_lab(result)[..., 1:], -1, 0))
    assert chroma.mean() > 5
    steps = [s for s in steps if not s.stage]  # "Loading …" comes first when the model was not in memory
    pictures = [s.picture() for s in steps]  # made now, after the run, as the preview thread makes them
    assert len(steps) == 3 and all(p is not None for p in pictures)
    for picture in pictures:  # previews already carry the original lightness
        small_l = imaging.resize(imaging.lightness(grey_photo).astype(np.float32), picture.shape[1::-1])
        assert np.abs(imaging.lightness(picture) - small_l).mean() < 1.0


def test_sepia_is_treated_by_its_lightness(engine, model_dir, photo):
    sepia = imaging.with_lightness(imaging.lightness(photo), np.full((*photo.shape[:2], 2), (8.0, 25.0)))
    result = engine.run(request(sepia, model_dir("img2img")), lambda s: None, CancelToken()).image
    assert np.abs(imaging.lightness(result) - imaging.lightness(sepia)).max() <= 100 / 255


def test_masked_colorization_leaves_the_outside_bit_identical(engine, model_dir, grey_photo):
    mask = blob_mask(512, 512, seed=4)
    result = engine.run(request(grey_photo, model_dir("img2img"), mask=mask, params={"grow": 0, "feather": 6}), lambda s: None, CancelToken()).image
    far = ndimage.distance_transform_edt(mask < 128) > 6
    assert np.array_equal(result[far], grey_photo[far])
    assert not np.array_equal(result[mask >= 128], grey_photo[mask >= 128])


def hue_distance(rgb, target_rgb):
    lab = imaging.rgb_to_lab(rgb)
    target = imaging.rgb_to_lab(np.array([[target_rgb]], np.uint8))[0, 0]
    return np.abs(np.angle(np.exp(1j * (np.arctan2(lab[..., 2], lab[..., 1]) - np.arctan2(target[2], target[1]))))).mean()


def test_a_hint_stroke_pulls_its_neighbourhood_towards_its_hue(engine, model_dir, grey_photo):
    hints = np.zeros((512, 512, 4), np.uint8)
    hints[300:312, 150:260] = (30, 60, 230, 255)  # a blue stroke
    plain = engine.run(request(grey_photo, model_dir("img2img")), lambda s: None, CancelToken()).image
    hinted = engine.run(request(grey_photo, model_dir("img2img"), hints=hints), lambda s: None, CancelToken()).image
    near = np.s_[290:322, 140:270]
    assert hue_distance(hinted[near], (30, 60, 230)) < hue_distance(plain[near], (30, 60, 230)) - 0.1
    far = np.s_[20:80, 20:80]  # the hint's reach is local
    assert np.abs(hinted[far].astype(int) - plain[far]).mean() < 1


def test_saturation_scales_the_colour(engine, model_dir, grey_photo):
    chroma = lambda rgb: np.hypot(*np.moveaxis(imaging.rgb_to_lab(rgb)[..., 1:], -1, 0)).mean()
    grey = engine.run(request(grey_photo, model_dir("img2img"), params={"saturation": 0.0}), lambda s: None, CancelToken()).image
    normal = engine.run(request(grey_photo, model_dir("img2img")), lambda s: None, CancelToken()).image
    vivid = engine.run(request(grey_photo, model_dir("img2img"), params={"saturation": 1.8}), lambda s: None, CancelToken()).image
    assert chroma(grey) < 1.0 < chroma(normal) < chroma(vivid)


def test_one_channel_and_16_bit_files_come_out_rgb_of_the_same_size(engine, model_dir, photo, tmp_path):
    l8 = Image.fromarray(photo[:300, :400].mean(-1).astype(np.uint8), "L")
    l8.save(tmp_path / "grey.png")
    Image.fromarray((photo[:300, :400].mean(-1) * 257).astype(np.uint16)).save(tmp_path / "grey16.png")
    for name in ("grey.png", "grey16.png"):
        image = imaging.load_image(tmp_path / name)
        result = engine.run(request(image, model_dir("img2img")), lambda s: None, CancelToken()).image
        assert result.shape == (300, 400, 3) and result.dtype == np.uint8


def test_hints_of_the_wrong_size_are_refused(engine, model_dir, grey_photo):
    with pytest.raises(InputError, match="RGBA picture of the image's size"):
        engine.check(request(grey_photo, model_dir("img2img"), hints=np.zeros((10, 10, 4), np.uint8)))
