"""Deterministic DDIM for DiffAE, as the official code (phizaz/diffae) does it: inversion (picture →
x_T given z_sem) and decoding (x_T → picture), and the attribute arithmetic on z_sem.

The official sampler is guided-diffusion's, respaced:
- the schedule: T = 1000 linear betas from 1e-4 to 0.02 (float64), ᾱ its cumulative product;
- N steps visit `space_timesteps(1000, "ddimN")`: 0, s, 2s, … for the one integer stride s that gives
  exactly N timesteps (so only some N are possible: `step_counts()`); the respaced process keeps ᾱ at
  those timesteps, its ᾱ_prev starts at 1 and its ᾱ_next ends at 0;
- the network is called with the original timestep numbers, as integers;
- every step predicts x0 from ε, clips it to [-1, 1], and re-derives ε from the clipped x0;
- inversion (`ddim_reverse_sample_loop`) runs the N steps upwards and its last step lands on ᾱ = 0, so
  x_T is the re-derived ε; decoding (`ddim_sample_loop`) starts x_T at the last spaced timestep, makes N
  model calls downwards and its last step (ᾱ_prev = 1) returns the clipped x0.
The coefficients are computed in float64 and used in float32, as the official `_extract_into_tensor`
does; x stays float32 whatever the model's dtype (only the model call runs in its dtype).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from engines.api import InputError

T = 1000


def alphas_cumprod() -> np.ndarray:
    betas = np.linspace(1e-4, 0.02, T, dtype=np.float64)
    return np.cumprod(1.0 - betas)


def step_counts() -> list[int]:
    """Every step count the official spacing can make: N with len(range(0, 1000, s)) == N for some s."""
    return sorted({len(range(0, T, stride)) for stride in range(1, T)})


def timesteps(steps: int) -> list[int]:
    """The timesteps DDIM visits, ascending: the official `space_timesteps(1000, f"ddim{steps}")`."""
    for stride in range(1, T):
        if len(range(0, T, stride)) == steps:
            return list(range(0, T, stride))
    counts = step_counts()
    lower = max((c for c in counts if c < steps), default=counts[0])
    higher = min((c for c in counts if c > steps), default=counts[-1])
    raise InputError(f"DiffAE cannot take exactly {steps} DDIM steps (the official spacing needs an even stride over 1000 "
                     f"timesteps); the nearest counts that work are {lower} and {higher}.")


@dataclass(frozen=True)
class Schedule:
    """The respaced process's coefficients, one per step index, as float32 tensors."""

    timesteps: torch.Tensor  # the original timestep numbers (int64), passed to the network
    sqrt_recip_alphas_cumprod: torch.Tensor
    sqrt_recipm1_alphas_cumprod: torch.Tensor
    alphas_cumprod_prev: torch.Tensor
    alphas_cumprod_next: torch.Tensor

    @classmethod
    def for_steps(cls, steps: int, device: torch.device) -> "Schedule":
        ts = timesteps(steps)
        abar = alphas_cumprod()[ts]
        def f32(values: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(values).to(device).float()
        return cls(
            timesteps=torch.tensor(ts, dtype=torch.int64, device=device),
            sqrt_recip_alphas_cumprod=f32(np.sqrt(1.0 / abar)),
            sqrt_recipm1_alphas_cumprod=f32(np.sqrt(1.0 / abar - 1)),
            alphas_cumprod_prev=f32(np.append(1.0, abar[:-1])),
            alphas_cumprod_next=f32(np.append(abar[1:], 0.0)),
        )


def _clipped_x0_and_eps(model, x: torch.Tensor, index: int, z: torch.Tensor, schedule: Schedule) -> tuple[torch.Tensor, torch.Tensor]:
    """The network's ε at step `index`, its x0 clipped to [-1, 1], and ε re-derived from that x0 (float32)."""
    dtype = next(model.parameters()).dtype
    t = schedule.timesteps[index].expand(x.shape[0])
    eps = model(x.to(dtype), t, z.to(dtype)).float()
    recip, recipm1 = schedule.sqrt_recip_alphas_cumprod[index], schedule.sqrt_recipm1_alphas_cumprod[index]
    x0 = (recip * x - recipm1 * eps).clamp(-1, 1)
    return x0, (recip * x - x0) / recipm1


@torch.no_grad()
def invert(model, x0: torch.Tensor, cond: torch.Tensor, steps: int, cancel: Callable[[], None] = lambda: None,
           on_step: Callable[[int, int], None] = lambda i, n: None) -> torch.Tensor:
    """x_T such that decoding it with `cond` gives back `x0` (the official `ddim_reverse_sample_loop`,
    eta 0). Returns float32. `on_step(i, n)` after each of the N model calls."""
    schedule = Schedule.for_steps(steps, x0.device)
    x = x0.float()
    for index in range(steps):
        pred_x0, eps = _clipped_x0_and_eps(model, x, index, cond, schedule)
        a_next = schedule.alphas_cumprod_next[index]
        x = pred_x0 * a_next.sqrt() + (1 - a_next).sqrt() * eps
        on_step(index + 1, steps)
        cancel()
    return x


@torch.no_grad()
def decode(model, x_t: torch.Tensor, cond: torch.Tensor, steps: int,
           on_step: Callable[[int, int, torch.Tensor], None] = lambda i, n, x0: None) -> torch.Tensor:
    """The picture for x_T and `cond` in [-1, 1] (the official `ddim_sample_loop`, eta 0): N model calls
    from the last spaced timestep down; the last returns the clipped x0. `on_step(i, n, x0)` after each."""
    schedule = Schedule.for_steps(steps, x_t.device)
    x = x_t.float()
    for i, index in enumerate(reversed(range(steps))):
        pred_x0, eps = _clipped_x0_and_eps(model, x, index, cond, schedule)
        a_prev = schedule.alphas_cumprod_prev[index]
        x = pred_x0 * a_prev.sqrt() + (1 - a_prev).sqrt() * eps
        on_step(i + 1, steps, pred_x0)
    return x


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
    return ((x[0].permute(1, 2, 0).float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu().numpy()
