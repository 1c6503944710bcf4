"""Own attribute sliders: fitted from marked examples, saved in the data folder, used by name."""

import numpy as np
import pytest
import torch

from engines import imaging, registry, services, testing
from engines.api import CancelToken, InputError, Request, Task
from engines.diffae import directions, sampling
from engines.diffae.engine import ATTRIBUTES


@pytest.fixture(scope="module")
def diffae_folder(tmp_path_factory):
    return testing.write_diffae(tmp_path_factory.mktemp("diffae"))


def test_the_fit_recovers_a_planted_direction_in_normalised_space():
    g = torch.Generator().manual_seed(1)
    dim = 64
    mean, std = torch.randn(dim, generator=g, dtype=torch.float64), torch.rand(dim, generator=g, dtype=torch.float64) + 0.5
    planted = torch.randn(dim, generator=g, dtype=torch.float64)
    planted /= planted.norm()
    normalised = torch.randn(12, dim, generator=g, dtype=torch.float64) * 0.1
    has = (normalised[:6] + 3 * planted) * std + mean  # six faces with the trait, six without
    lacks = normalised[6:] * std + mean
    fitted = directions.fit_direction(has, lacks, mean, std).double()
    assert abs(float(fitted.norm()) - 1) < 1e-6
    assert float(fitted @ planted) > 0.98  # noise 0.1 per dimension against a step of 3: nearly exact
    by_hand = ((has - mean) / std).mean(0) - ((lacks - mean) / std).mean(0)
    assert torch.allclose(fitted, by_hand / by_hand.norm(), atol=1e-6)


def test_the_fit_refuses_what_cannot_define_a_direction():
    z = torch.randn(3, 8)
    with pytest.raises(InputError, match="at least one example"):
        directions.fit_direction(z[:0], z, torch.zeros(8), torch.ones(8))
    with pytest.raises(InputError, match="same code"):
        directions.fit_direction(z[:1], z[:1], torch.zeros(8), torch.ones(8))
    with pytest.raises(InputError, match="built-in"):
        directions.check_name("Smiling", ATTRIBUTES)
    with pytest.raises(InputError, match="letter followed by"):
        directions.check_name("../evil", ATTRIBUTES)


def test_saved_sliders_load_back_and_damaged_files_are_left_out(tmp_path):
    vector = torch.randn(16)
    directions.save_direction(tmp_path, "Freckles", vector / vector.norm(), 3, 4, "model")
    (tmp_path / "Broken.safetensors").write_bytes(b"not a tensor file")
    found = directions.load_directions(tmp_path, 16)
    assert list(found) == ["Freckles"] and torch.allclose(found["Freckles"], vector / vector.norm())
    assert directions.load_directions(tmp_path, 512) == {}  # another model's size is not offered
    directions.delete_direction(tmp_path, "Freckles")
    assert directions.load_directions(tmp_path) == {}


def face_request(image, folder, **params):
    return Request(Task.ATTRIBUTES, image, None, model=str(folder), params={"alignment": "square", "inversion_steps": 10, "render_steps": 5, **params})


def test_a_fitted_slider_is_saved_in_the_data_folder_and_moves_the_face_like_a_builtin(diffae_folder, photo, monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    engine = registry.get("attributes")
    has = [face_request(photo, diffae_folder, region_x=x, region_y=20, region_size=256) for x in (90, 100, 110)]
    lacks = [face_request(photo, diffae_folder, region_x=x, region_y=200, region_size=256) for x in (0, 200)]
    seen = []
    path = engine.fit_slider("Moustache", has, lacks, CancelToken(), lambda done, total: seen.append((done, total)))
    assert seen == [(1, 5), (2, 5), (3, 5), (4, 5), (5, 5)]
    assert path.parent == services.user_data_folder() / "directions" and services.own_sliders() == ("Moustache",)

    # Rendering with the slider equals moving z_sem along the saved direction by hand.
    result = engine.run(face_request(photo, diffae_folder, attributes="Moustache=0.4"), lambda s: None, CancelToken())
    assert result.info["attributes"] == {"Moustache": 0.4}
    model, classifier = engine._load(str(diffae_folder), torch.device("cpu"), torch.float32)
    x = sampling.to_tensor(imaging.resize(photo, (model.cfg.image_size,) * 2), torch.float32, torch.device("cpu"))
    z = model.encoder(x)
    unit = directions.load_directions(path.parent)["Moustache"]
    moved = ((z - classifier["mean"]) / classifier["std"] + 0.4 * z.shape[-1] ** 0.5 * unit) * classifier["std"] + classifier["mean"]
    x_t = sampling.invert(model, x, z, 10)
    by_hand = sampling.to_image(sampling.decode(model, x_t, moved, 5))
    assert np.array_equal(result.image, imaging.resize(by_hand, (photo.shape[1], photo.shape[0])))

    services.delete_own_slider("Moustache")
    with pytest.raises(InputError, match="Unknown attribute"):
        engine.check(face_request(photo, diffae_folder, attributes="Moustache=0.4"))

