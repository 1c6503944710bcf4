import math

import numpy as np
import pytest
import torch

from engines import imaging, registry, testing
from engines.api import CancelToken, Cancelled, InputError, ModelUnavailable, Request, Task
from engines.diffae import sampling
from engines.diffae.engine import ATTRIBUTES, parse_attributes


@pytest.fixture(scope="module")
def diffae_folder(tmp_path_factory):
    return testing.write_diffae(tmp_path_factory.mktemp("diffae"))


@pytest.fixture(scope="module")
def face(photo):
    return np.ascontiguousarray(photo[20:276, 100:356])  # the astronaut's head, 256×256


def psnr(a, b, peak):
    return 10 * math.log10(peak**2 / float(((a - b) ** 2).mean()))


def test_direction_arithmetic_matches_a_hand_computation():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(1, 4, generator=g, dtype=torch.float64)
    weight = torch.randn(3, 4, generator=g, dtype=torch.float64)
    mean, std = torch.tensor([0.1, -0.2, 0.3, 0.0], dtype=torch.float64), torch.tensor([1.0, 2.0, 0.5, 4.0], dtype=torch.float64)
    moved = sampling.move(z, weight, mean, std, {1: 0.25})
    by_hand = ((z - mean) / std + 0.25 * 2.0 * weight[1] / weight[1].norm()) * std + mean  # √4 = 2
    assert torch.allclose(moved, by_hand)
    both = sampling.move(z, weight, mean, std, {0: -0.5, 2: 0.3})
    by_hand = ((z - mean) / std + 2.0 * (-0.5 * weight[0] / weight[0].norm() + 0.3 * weight[2] / weight[2].norm())) * std + mean
    assert torch.allclose(both, by_hand)
    assert torch.equal(sampling.move(z, weight, mean, std, {}), z)


def test_attribute_names_are_checked():
    assert parse_attributes("Smiling=0.3, Young=-0.2") == {ATTRIBUTES.index("Smiling"): 0.3, ATTRIBUTES.index("Young"): -0.2}
    assert len(ATTRIBUTES) == 40 and ATTRIBUTES[0] == "5_o_Clock_Shadow" and ATTRIBUTES[-1] == "Young"
    with pytest.raises(InputError, match="did you mean Smiling"):
        parse_attributes("smiling=0.2")
    with pytest.raises(InputError, match="must be a number"):
        parse_attributes("Smiling=lots")


def request(photo, folder, **params):
    return Request(Task.ATTRIBUTES, photo, None, model=str(folder),
                   params={"alignment": "square", "region_x": 100, "region_y": 20, "region_size": 256, "inversion_steps": 20,
                           "render_steps": 10, **params})


def test_region_edit_keeps_everything_outside_the_region(diffae_folder, photo):
    engine = registry.get("attributes")
    steps = []
    result = engine.run(request(photo, diffae_folder, attributes="Smiling=0.4"), steps.append, CancelToken())
    outside = np.ones(photo.shape[:2], bool)
    outside[20:276, 100:356] = False
    assert np.array_equal(result.image[outside], photo[outside])
    assert not np.array_equal(result.image[60:240, 140:320], photo[60:240, 140:320])
    # Encoding is counted too (it is most of the wait), then every rendering step shows a picture.
    assert [(s.phase, s.step, s.total) for s in steps] == ([("Encoding the face", i, 20) for i in range(1, 21)]
                                                           + [("Rendering", i, 10) for i in range(1, 11)])
    assert all(s.box == (100, 20, 256, 256) for s in steps)
    assert all(s.picture() is None for s in steps[:20]) and all(s.picture().shape == (256, 256, 3) for s in steps[20:])


def test_several_attributes_at_once_and_the_codes_are_cached(diffae_folder, photo):
    engine = registry.get("attributes")
    model = engine._load(str(diffae_folder), torch.device("cpu"), torch.float32)[0]
    calls = [0]
    handle = model.encoder.register_forward_pre_hook(lambda *a: calls.__setitem__(0, calls[0] + 1))
    try:
        a = engine.run(request(photo, diffae_folder, attributes="Smiling=0.3", region_x=50), lambda s: None, CancelToken())
        b = engine.run(request(photo, diffae_folder, attributes="Smiling=0.3,Young=-0.3", region_x=50), lambda s: None, CancelToken())
    finally:
        handle.remove()
    assert calls[0] == 1 and b.info["cached"]  # moving a slider only decodes
    assert not np.array_equal(a.image, b.image)


def test_zero_amounts_render_the_unmoved_codes(diffae_folder, photo):
    """With every amount 0 the region is the official round trip of the face (encode, invert, decode with
    the same z), nothing else. How close that comes to the photo depends on the weights: the official
    sampler clips x0 and ends inversion at ᾱ = 0, which only a trained model undoes well (the PSNR of the
    random tiny model is printed, not asserted; tests/unit/test_diffae_reference.py checks the sampler)."""
    engine = registry.get("attributes")
    result = engine.run(request(photo, diffae_folder, inversion_steps=100), lambda s: None, CancelToken()).image
    model, _ = engine._load(str(diffae_folder), torch.device("cpu"), torch.float32)
    region = np.s_[20:276, 100:356]
    x = sampling.to_tensor(imaging.resize(photo[region], (model.cfg.image_size,) * 2), torch.float32, torch.device("cpu"))
    z = model.encoder(x)
    by_hand = imaging.resize(sampling.to_image(sampling.decode(model, sampling.invert(model, x, z, 100), z, 10)), (256, 256))
    inner = np.s_[52:244, 132:324]  # 32 px inside the region's feathered edge the region is the rendering itself
    assert np.array_equal(result[inner], by_hand[32:224, 32:224])
    print(f"PSNR with all amounts 0 (random tiny model): {psnr(result[region].astype(float), photo[region].astype(float), 255):.1f} dB")


def test_cancel_during_decoding(diffae_folder, photo):
    token, seen = CancelToken(), []

    def on_step(step):
        seen.append(step.step)
        if step.step == 3:
            token.cancel()

    with pytest.raises(Cancelled):
        registry.get("attributes").run(request(photo, diffae_folder), on_step, token)
    assert seen == [1, 2, 3]


def test_without_weights_it_says_what_to_download_and_where(photo, tmp_path):
    engine = registry.get("attributes")
    for model in (None, str(tmp_path)):
        with pytest.raises(ModelUnavailable) as err:
            engine.check(Request(Task.ATTRIBUTES, photo, None, model=model, params={"attributes": "Smiling=0.2"}))
        assert "github.com/phizaz/diffae" in str(err.value) and "convert-diffae" in str(err.value)
    with pytest.raises(InputError, match="goes outside"):
        engine.check(Request(Task.ATTRIBUTES, photo, None, model=str(tmp_path), params={"region_x": 400, "region_size": 256}))
