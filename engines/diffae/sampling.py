"""Deterministic DDIM for DiffAE: inversion (picture → x_T given z_sem) and decoding (x_T → picture),
and the attribute arithmetic on z_sem.

The schedule is DiffAE's: 1000 linear betas from 1e-4 to 0.02; K steps use every (1000/K)-th
timestep, and the network is called with the original timestep numbers.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

T = 1000


def alphas_cumprod(dtype: torch.dtype = torch.float64) -> torch.Tensor:
    betas = torch.linspace(1e-4, 0.02, T, dtype=torch.float64)
    return torch.cumprod(1 - betas, 0).to(dtype)


def timesteps(steps: int) -> list[int]:
    """The K timesteps DDIM visits, ascending (DiffAE's "ddimK" spacing)."""
    stride = T / steps
    return sorted({int(round(i * stride)) for i in range(steps)})


def _x0_and_eps(model, x, t: int, z, abar: torch.Tensor, clip: bool):
    eps = model(x, torch.full((x.shape[0],), float(t), dtype=x.dtype, device=x.device), z)
    a = abar[t].to(x.dtype)
    x0 = (x - (1 - a).sqrt() * eps) / a.sqrt()
    if clip:
        x0 = x0.clamp(-1, 1)
        eps = (x - a.sqrt() * x0) / (1 - a).sqrt()
    return x0, eps


@torch.no_grad()
def invert(model, image: torch.Tensor, z: torch.Tensor, steps: int, cancel: Callable[[], None] = lambda: None) -> torch.Tensor:
    """x_T such that decoding it with z gives back `image` (deterministic DDIM run forwards)."""
    abar = alphas_cumprod().to(image.device)
    ts = timesteps(steps)
    x = image
    for t, t_next in zip(ts, ts[1:] + [T - 1]):
        x0, eps = _x0_and_eps(model, x, t, z, abar, clip=False)
        a_next = abar[t_next].to(x.dtype)
        x = a_next.sqrt() * x0 + (1 - a_next).sqrt() * eps
        cancel()
    return x


@torch.no_grad()
def decode(model, x_t: torch.Tensor, z: torch.Tensor, steps: int, on_step: Callable[[int, int, torch.Tensor], None] = lambda i, n, x0: None,
           clip: bool = True) -> torch.Tensor:
    """The picture for x_T and z (deterministic DDIM run backwards). `on_step(i, n, x0)` after each step."""
    abar = alphas_cumprod().to(x_t.device)
    ts = timesteps(steps)
    x = x_t
    starts = ts[1:] + [T - 1]
    for i, (t_prev, t) in enumerate(zip(reversed(ts), reversed(starts))):
        x0, eps = _x0_and_eps(model, x, t, z, abar, clip)
        a_prev = abar[t_prev].to(x.dtype)
        x = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
        on_step(i + 1, len(ts), x0)
    # The last step lands on t = 0, whose alpha-bar is 1 - 1e-4: finish with its clean estimate.
    x0, _ = _x0_and_eps(model, x, ts[0], z, abar, clip)
    return x0 if ts[0] == 0 else x


def move(z: torch.Tensor, weight: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, amounts: dict[int, float]) -> torch.Tensor:
    """z_sem moved along attribute directions, as the paper does: normalise z with the classifier's
    mean and std, add amount · √dim · (unit classifier direction) per attribute, de-normalise. The
    √dim scale makes an amount a fraction of a normalised code's typical length, so ±0.5 is a
    strong change whatever the code's size."""
    normalised = (z - mean) / std
    scale = math.sqrt(z.shape[-1])
    for index, amount in amounts.items():
        direction = weight[index] / weight[index].norm()
        normalised = normalised + amount * scale * direction
    return normalised * std + mean


def to_tensor(image: np.ndarray, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.array(image, dtype=np.float64)).permute(2, 0, 1)[None].to(device, dtype) / 127.5 - 1


def to_image(x: torch.Tensor) -> np.ndarray:
    return ((x[0].permute(1, 2, 0).clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu().numpy()
