import math

import numpy as np
import pytest
import torch
from PIL import Image

from engines import registry, testing
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


def test_ddim_inversion_then_decoding_returns_the_input(face):
    """Deterministic DDIM inversion is a first-order method: run back with the same z_sem it returns
    the input up to an error proportional to the step size. So the tolerance is justified by the
    method itself: doubling the steps must halve the error (within 30 %), and at 200 steps in
    float64 the round trip must reach 25 dB."""
    model = testing.build_diffae().double().eval()
    x = sampling.to_tensor(np.asarray(Image.fromarray(face).resize((32, 32), Image.LANCZOS)), torch.float64, torch.device("cpu"))
    z = model.encoder(x)
    errors = {}
    for steps in (50, 100, 200):
        back = sampling.decode(model, sampling.invert(model, x, z, steps), z, steps, clip=False)
        errors[steps] = float((back - x).abs().max())
    assert 1.4 < errors[50] / errors[100] < 2.6 and 1.4 < errors[100] / errors[200] < 2.6, errors
    back = sampling.decode(model, sampling.invert(model, x, z, 200), z, 200, clip=False)
    assert psnr(back.numpy(), x.numpy(), 2.0) > 25


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
    return Request(Task.ATTRIBUTES, photo, None, steps=10, model=str(folder),
                   params={"region_x": 100, "region_y": 20, "region_size": 256, "inversion_steps": 20, **params})


def test_region_edit_keeps_everything_outside_the_region(diffae_folder, photo):
    engine = registry.get("attributes")
    steps = []
    result = engine.run(request(photo, diffae_folder, attributes="Smiling=0.4"), steps.append, CancelToken())
    outside = np.ones(photo.shape[:2], bool)
    outside[20:276, 100:356] = False
    assert np.array_equal(result.image[outside], photo[outside])
    assert not np.array_equal(result.image[60:240, 140:320], photo[60:240, 140:320])
    assert [s.step for s in steps] == list(range(1, 11)) and steps[0].box == (100, 20, 256, 256)


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


def test_zero_amounts_reproduce_the_input(diffae_folder, photo):
    """Reported PSNR: with all amounts 0 the region comes back from the tiny model (32-pixel
    model size, so most of the loss is the scaling down and up) at this level or better."""
    engine = registry.get("attributes")
    result = engine.run(request(photo, diffae_folder, inversion_steps=100), lambda s: None, CancelToken()).image
    region = np.s_[20:276, 100:356]
    small = np.asarray(Image.fromarray(np.asarray(Image.fromarray(photo[region]).resize((32, 32), Image.LANCZOS))).resize((256, 256), Image.LANCZOS))
    print(f"PSNR with all amounts 0: {psnr(result[region].astype(float), photo[region].astype(float), 255):.1f} dB "
          f"(the 32-pixel scaling alone: {psnr(small.astype(float), photo[region].astype(float), 255):.1f} dB)")
    assert psnr(result[region].astype(float), photo[region].astype(float), 255) > 13


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
