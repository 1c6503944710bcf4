"""Your own attribute sliders: a direction in z_sem space fitted from examples the person marks as
having or lacking a trait, saved as one small safetensors file per slider in the user data folder.

The fit works in the classifier's normalised space (z − mean) / std, where the 40 CelebA
directions live too, so an amount means the same on an own slider as on a built-in one:
the direction is the difference between the mean normalised code of the examples that have the
trait and of those that lack it, scaled to unit length. With a few examples this is far steadier
than training a classifier (the paper's directions are linear classifiers trained on 200k faces;
with ten faces a classifier would mostly learn noise, while a mean difference needs no tuning).

Listing the sliders (`slider_names`) reads only the files' safetensors headers and imports no
torch: the editor lists them on the GUI thread, before any engine is loaded. Fitting, saving and
loading the vectors import torch when called.
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from engines.api import InputError

if TYPE_CHECKING:
    import torch

NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,39}")
SUFFIX = ".safetensors"


def check_name(name: str, taken: tuple[str, ...]) -> None:
    if not NAME.fullmatch(name):
        raise InputError(f"A slider name is a letter followed by up to 39 letters, digits or underscores, not {name!r}.")
    if name in taken:
        raise InputError(f"{name} is one of the built-in attributes; choose another name.")


def fit_direction(has: torch.Tensor, lacks: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """The unit direction (normalised space) from the codes `lacks` [m, d] towards the codes `has` [n, d]."""
    import torch

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


# Float types a direction may be stored in, as numpy reads them; bfloat16 is read as the top half of a float32.
FLOAT_TYPES = {"F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": np.dtype("<u2")}
ITEM_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U64": 8, "U32": 4, "U16": 2, "U8": 1,
              "BOOL": 1}


def _is_direction_file(path: Path) -> bool:
    """Whether `path` is a safetensors file whose `direction` tensor is one-dimensional and finite.

    The format: an 8-byte little-endian header length, a JSON header (name → dtype, shape, byte
    offsets into the data that follows), then the data; only the header and the direction's bytes
    are read."""
    try:
        with open(path, "rb") as f:
            size = path.stat().st_size
            (length,) = struct.unpack("<Q", f.read(8))
            if length > size - 8:
                return False
            entry = json.loads(f.read(length)).get("direction")
            if not isinstance(entry, dict) or entry.get("dtype") not in ITEM_BYTES:
                return False
            shape, (start, end) = entry["shape"], entry["data_offsets"]
            if len(shape) != 1 or not 0 <= start <= end <= size - 8 - length or end - start != shape[0] * ITEM_BYTES[entry["dtype"]]:
                return False
            kind = FLOAT_TYPES.get(entry["dtype"])
            if kind is None:
                return True  # integers and booleans are always finite
            f.seek(8 + length + start)
            values = np.frombuffer(f.read(end - start), kind)
    except (OSError, ValueError, TypeError, KeyError, AttributeError, struct.error):  # a damaged file: leave it out rather than fail
        return False
    if entry["dtype"] == "BF16":
        values = (values.astype(np.uint32) << 16).view(np.float32)
    return bool(np.isfinite(values).all())


def slider_names(folder: Path | None) -> tuple[str, ...]:
    """The names of the saved sliders in `folder`, in name order: the files named like a slider that
    hold a one-dimensional, finite `direction`. Imports no torch."""
    if folder is None or not folder.is_dir():
        return ()
    return tuple(path.stem for path in sorted(folder.glob(f"*{SUFFIX}")) if NAME.fullmatch(path.stem) and _is_direction_file(path))


def load_directions(folder: Path | None, dim: int | None = None) -> dict[str, torch.Tensor]:
    """Every saved slider in `folder` (see `slider_names`), by name, in name order; those that are not a
    [dim] direction are skipped."""
    from safetensors.torch import load_file

    found: dict[str, torch.Tensor] = {}
    for name in slider_names(folder):
        try:
            vector = load_file(str(folder / f"{name}{SUFFIX}"))["direction"]
        except Exception:  # damaged after it was listed: leave it out rather than fail every render
            continue
        if dim is None or vector.shape[0] == dim:
            found[name] = vector
    return found


def delete_direction(folder: Path, name: str) -> None:
    check_name(name, ())
    (folder / f"{name}{SUFFIX}").unlink(missing_ok=True)
