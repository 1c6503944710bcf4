"""Your own attribute sliders: a direction in z_sem space fitted from examples the person marks as
having or lacking a trait, saved as one small safetensors file per slider in the user data folder.

The fit works in the classifier's normalised space (z − mean) / std, where the 40 CelebA
directions live too, so an amount means the same on an own slider as on a built-in one:
the direction is the difference between the mean normalised code of the examples that have the
trait and of those that lack it, scaled to unit length. With a few examples this is far steadier
than training a classifier (the paper's directions are linear classifiers trained on 200k faces;
with ten faces a classifier would mostly learn noise, while a mean difference needs no tuning).
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from engines.api import InputError

NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,39}")
SUFFIX = ".safetensors"


def check_name(name: str, taken: tuple[str, ...]) -> None:
    if not NAME.fullmatch(name):
        raise InputError(f"A slider name is a letter followed by up to 39 letters, digits or underscores, not {name!r}.")
    if name in taken:
        raise InputError(f"{name} is one of the built-in attributes; choose another name.")


def fit_direction(has: torch.Tensor, lacks: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """The unit direction (normalised space) from the codes `lacks` [m, d] towards the codes `has` [n, d]."""
    if len(has) < 1 or len(lacks) < 1:
        raise InputError("Mark at least one example that has the trait and one that lacks it.")
    difference = ((has - mean) / std).double().mean(0) - ((lacks - mean) / std).double().mean(0)
    length = difference.norm()
    if not torch.isfinite(length) or length < 1e-6:
        raise InputError("The examples that have the trait and those that lack it encode to the same code; mark different faces.")
    return (difference / length).float()


def save_direction(folder: Path, name: str, direction: torch.Tensor, has: int, lacks: int, model: str) -> Path:
    """Write `folder/NAME.safetensors` (replacing a slider of that name) and return its path."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}{SUFFIX}"
    partial = path.with_suffix(".partial")
    save_file({"direction": direction.detach().float().cpu().contiguous()}, str(partial),
              metadata={"name": name, "has": str(has), "lacks": str(lacks), "model": model})
    partial.replace(path)  # a crash mid-write never leaves a half slider behind
    return path


def load_directions(folder: Path | None, dim: int | None = None) -> dict[str, torch.Tensor]:
    """Every saved slider in `folder`, by name, in name order; files that are not a [dim] direction are skipped."""
    from safetensors.torch import load_file

    found: dict[str, torch.Tensor] = {}
    if folder is None or not folder.is_dir():
        return found
    for path in sorted(folder.glob(f"*{SUFFIX}")):
        if not NAME.fullmatch(path.stem):
            continue
        try:
            vector = load_file(str(path)).get("direction")
        except Exception:  # a damaged file: leave it out rather than fail every render
            continue
        if vector is not None and vector.ndim == 1 and (dim is None or vector.shape[0] == dim) and torch.isfinite(vector).all():
            found[path.stem] = vector
    return found


def delete_direction(folder: Path, name: str) -> None:
    check_name(name, ())
    (folder / f"{name}{SUFFIX}").unlink(missing_ok=True)
