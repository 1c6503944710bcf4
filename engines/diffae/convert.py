"""Converters for the official DiffAE checkpoints (PyTorch Lightning `.ckpt` files) to safetensors.

No pickled code runs: checkpoints are read with torch.load(weights_only=True), PyTorch's
restricted unpickler, which accepts tensors and plain containers only and refuses any other
Python object (the official checkpoints store their hyper-parameters as plain JSON-like values).

- the autoencoder: the EMA weights, the keys under `ema_model.` with that prefix removed;
- the attribute classifier (ffhq256_autoenc_cls): a linear layer 512 → 40 over z_sem normalised by
  the mean and standard deviation stored with it, saved as weight, bias, mean and std.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch

from engines.api import InputError

EMA_PREFIX = "ema_model."


def read_checkpoint(path: str | Path) -> dict:
    name = Path(path).name
    try:
        checkpoint = torch.load(str(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise InputError(f"There is no checkpoint called {name}.") from None
    except pickle.UnpicklingError as exc:
        raise InputError(
            f"{name} carries pickled Python objects besides weights, which could run code; it was refused "
            f"({str(exc).splitlines()[-1][:160]})."
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise InputError(f"{name} could not be read as a PyTorch checkpoint ({str(exc).splitlines()[0][:160]}).") from None
    if not isinstance(checkpoint, dict):
        raise InputError(f"{name} is not a checkpoint dictionary.")
    return checkpoint.get("state_dict", checkpoint)


def ema_weights(state: dict) -> dict[str, torch.Tensor]:
    weights = {k[len(EMA_PREFIX):]: v for k, v in state.items() if k.startswith(EMA_PREFIX) and isinstance(v, torch.Tensor)}
    if not weights:
        raise InputError("The checkpoint has no EMA weights (no keys starting with ema_model.); is it a DiffAE autoencoder checkpoint?")
    return weights


def classifier_weights(state: dict) -> dict[str, torch.Tensor]:
    try:
        weight, bias = state["classifier.weight"], state["classifier.bias"]
        mean, std = state["conds_mean"], state["conds_std"]
    except KeyError as missing:
        raise InputError(f"The checkpoint has no {missing.args[0]}; is it the DiffAE attribute classifier (ffhq256_autoenc_cls)?") from None
    return {"weight": weight, "bias": bias, "mean": mean.reshape(-1), "std": std.reshape(-1)}


def convert(checkpoint: str | Path, out: str | Path) -> str:
    """Write the autoencoder's EMA weights, or the classifier, as safetensors. Returns which it was."""
    from safetensors.torch import save_file

    state = read_checkpoint(checkpoint)
    kind = "classifier" if "classifier.weight" in state else "autoencoder"
    tensors = classifier_weights(state) if kind == "classifier" else ema_weights(state)
    save_file({k: v.detach().contiguous() for k, v in tensors.items()}, str(out), metadata={"sandcastle": f"diffae-{kind}"})
    return kind
