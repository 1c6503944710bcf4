"""Our DiffAE against the official code (phizaz/diffae).

tests/data/diffae_reference_seed7_ddim30.safetensors holds a small official model's weights (official
key names) and what the unmodified official code computed with them: z = encoder(x0), ε at (x_t, t),
x_T from `ddim_reverse_sample_loop` over `space_timesteps(1000, "ddim30")`, and the render of x_T by
`ddim_sample_loop` (eta 0). A faithful port matches all four to well under 1e-4 in float32.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from engines.api import InputError
from engines.diffae import sampling
from engines.diffae.model import DiffAE, DiffAEConfig

REFERENCE = Path(__file__).resolve().parent.parent / "data" / "diffae_reference_seed7_ddim30.safetensors"


@pytest.fixture(scope="module")
def reference():
    with safe_open(str(REFERENCE), "pt") as f:
        meta = f.metadata()
    data = load_file(str(REFERENCE))
    shape = json.loads(meta["config"])
    # The README beside the official outputs: attention at 16, 2 res blocks, embedding and z of 512, 1 head.
    config = DiffAEConfig(image_size=shape["img"], channels=shape["ch"], channel_mult=tuple(shape["mult"]),
                          encoder_channel_mult=tuple(shape["enc_mult"]), num_res_blocks=2, attention_resolutions=(16,),
                          embed_channels=512, style_channels=512, num_heads=1, groups=32)
    model = DiffAE(config)
    model.load_state_dict({k[len("sd."):]: v for k, v in data.items() if k.startswith("sd.")}, strict=True)
    return model.eval(), data, meta


def test_the_spacing_is_the_official_ddim30(reference):
    _, _, meta = reference
    assert sampling.timesteps(int(meta["ddim_steps"])) == json.loads(meta["timesteps"])


@torch.no_grad()
def test_encoder_eps_inversion_and_render_match_the_official_code(reference):
    model, ref, _ = reference
    z = model.encoder(ref["x0"])
    eps = model(ref["xt"], ref["t"], ref["z"])
    x_t = sampling.invert(model, ref["x0"], ref["z"], 30)
    render = sampling.decode(model, ref["xT"], ref["z"], 30)
    errors = {name: float((ours - ref[name]).abs().max()) for name, ours in (("z", z), ("eps", eps), ("xT", x_t), ("render", render))}
    print("largest differences from the official code:", errors)
    assert all(error < 1e-4 for error in errors.values()), errors
    # The whole round trip from our own codes lands on the official render too.
    assert float((sampling.decode(model, x_t, z, 30) - ref["render"]).abs().max()) < 1e-4


@torch.no_grad()
def test_decoding_makes_n_model_calls_from_the_last_spaced_timestep_and_returns_the_clipped_x0(reference):
    model, ref, _ = reference
    seen = []
    handle = model.register_forward_pre_hook(lambda module, args: seen.append(args[1].tolist()))
    try:
        out = sampling.decode(model, ref["xT"] * 40, ref["z"], 30)  # a wild x_T: only clipping keeps the picture in range
        sampling.invert(model, ref["x0"], ref["z"], 30)
    finally:
        handle.remove()
    spaced = sampling.timesteps(30)
    assert [t[0] for t in seen[:30]] == spaced[::-1] and [t[0] for t in seen[30:]] == spaced  # down to render, up to invert
    assert float(out.abs().max()) <= 1.0


def test_step_counts_without_an_even_stride_are_refused_naming_the_nearest():
    counts = sampling.step_counts()
    assert {20, 30, 50, 100, 250, 1000} <= set(counts) and 45 not in counts
    with pytest.raises(InputError, match="cannot take exactly 45 DDIM steps.*nearest counts that work are 44 and 46"):
        sampling.timesteps(45)


class Recorder(torch.nn.Module):
    """A stand-in network in half precision that records what the sampler hands it."""

    def __init__(self, dtype):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros((), dtype=dtype))
        self.calls = []

    def forward(self, x, t, z):
        self.calls.append((x.dtype, t.dtype, t.tolist()))
        return (x * 0.1).to(self.weight.dtype)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_in_half_precision_timesteps_stay_integers_and_the_ddim_arithmetic_is_float32(dtype):
    model = Recorder(dtype)
    x0 = torch.from_numpy(np.linspace(-1, 1, 2 * 3 * 8 * 8, dtype=np.float32).reshape(2, 3, 8, 8))
    x_t = sampling.invert(model, x0.to(dtype), torch.zeros(2, 4, dtype=dtype), 250)
    out = sampling.decode(model, x_t, torch.zeros(2, 4, dtype=dtype), 100)
    assert x_t.dtype == torch.float32 and out.dtype == torch.float32
    assert all(x == dtype and t == torch.int64 for x, t, _ in model.calls)
    # bfloat16 cannot hold 986 (it would become 984): the network is given the exact timestep numbers.
    assert [ts[0] for _, _, ts in model.calls[:250]] == sampling.timesteps(250)
    assert [ts[0] for _, _, ts in model.calls[250:]] == sampling.timesteps(100)[::-1]
