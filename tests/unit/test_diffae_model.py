from pathlib import Path

import torch

from engines.diffae.model import FFHQ256, DiffAE, DiffAEConfig

SPEC = Path(__file__).resolve().parents[1] / "data" / "diffae_ffhq256_ema_keys.txt"  # the official checkpoint's EMA keys and shapes
TINY = DiffAEConfig(image_size=32, channels=32, channel_mult=(1, 2), encoder_channel_mult=(1, 2), num_res_blocks=1,
                    attention_resolutions=(16,), embed_channels=64, style_channels=16, groups=8)


def test_ffhq256_state_dict_matches_the_official_keys_and_shapes():
    expected = {}
    for line in SPEC.read_text().splitlines():
        name, shape = line.split(" ", 1)
        expected[name] = tuple(int(v) for v in shape.strip("()").split(",") if v.strip())
    with torch.device("meta"):  # shapes only: no memory for 100+ million parameters
        model = DiffAE(FFHQ256)
    mine = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert sorted(set(expected) - set(mine)) == [] and sorted(set(mine) - set(expected)) == []
    assert {k: s for k, s in mine.items() if expected[k] != s} == {}


def test_tiny_model_runs_in_float64():
    torch.manual_seed(0)
    model = DiffAE(TINY).double().eval()
    image = torch.rand(2, 3, 32, 32, dtype=torch.float64) * 2 - 1
    z = model.encoder(image)
    assert z.shape == (2, 16)
    eps = model(image, torch.tensor([10.0, 500.0], dtype=torch.float64), z)
    assert eps.shape == image.shape and eps.dtype == torch.float64
    other = model(image, torch.tensor([10.0, 500.0], dtype=torch.float64), z + 1)
    assert not torch.equal(eps, other)  # z_sem reaches the output (once the zero-initialised parts are not zero)
