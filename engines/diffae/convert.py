"""Converters for the official DiffAE checkpoints (PyTorch Lightning `.ckpt` files) to safetensors.

No pickled code runs. The official files were written by pytorch-lightning 1.4, which pickled
references to its own classes besides the weights (the callback states are keyed by the callback's
class; the hyper-parameters are an AttributeDict), so PyTorch's weights_only reader refuses them.
They are read with a restricted unpickler instead: it resolves the globals PyTorch's weights-only
mode allows (less bytearray, which could fill the memory), turns an allow-list of known Lightning and
omegaconf names into inert placeholders (nothing is imported, nothing of theirs is called; they only
hold the data pickled with them), refuses every other global, and sets state (BUILD) on placeholders
only. An archive that would unpack to far more than its own size is refused before reading, and a
tensor claiming more bytes than its storage or the file holds is refused before it is copied.

- the autoencoder: the EMA weights, the keys under `ema_model.` with that prefix removed;
- the attribute classifier (ffhq256_autoenc_cls): a linear layer 512 → 40 over z_sem normalised by
  the mean and standard deviation stored with it, saved as weight, bias, mean and std.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch

from engines.api import InputError, ModelUnavailable
from engines.checkpoints import check_archive_size

EMA_PREFIX = "ema_model."

# Classes pytorch-lightning 1.x and omegaconf pickle into a training checkpoint beside the weights.
PLACEHOLDER_NAMES = frozenset({
    "pytorch_lightning.utilities.parsing.AttributeDict",
    "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint",
    "pytorch_lightning.callbacks.lr_monitor.LearningRateMonitor",
    "pytorch_lightning.callbacks.early_stopping.EarlyStopping",
    "pytorch_lightning.callbacks.progress.ProgressBar",
    "pytorch_lightning.callbacks.progress.tqdm_progress.TQDMProgressBar",
    "pytorch_lightning.callbacks.gpu_stats_monitor.GPUStatsMonitor",
    "pytorch_lightning.trainer.states.TrainerFn",
    "pytorch_lightning.trainer.states.RunningStage",
    "omegaconf.dictconfig.DictConfig",
    "omegaconf.listconfig.ListConfig",
    "omegaconf.base.ContainerMetadata",
    "omegaconf.base.Metadata",
    "omegaconf.nodes.AnyNode",
    "omegaconf.nodes.StringNode",
    "omegaconf.nodes.IntegerNode",
    "omegaconf.nodes.FloatNode",
    "omegaconf.nodes.BooleanNode",
})


class Inert:
    """Stands in for a pickled Lightning or omegaconf object: keeps the data it was pickled with and
    runs nothing of the original class (which is never imported)."""

    def __new__(cls, *args, **kwargs):
        return object.__new__(cls)

    def __init__(self, *args, **kwargs) -> None:
        self.__dict__["pickled_arguments"] = args

    def __setstate__(self, state) -> None:
        self.__dict__["pickled_state"] = state


class InertDict(dict):
    """Stands in for a dict subclass (Lightning's AttributeDict): its items, nothing else."""

    def __setstate__(self, state) -> None:
        pass


_PLACEHOLDERS: dict[str, type] = {}


def placeholder(full_name: str) -> type:
    """One inert class per allowed name, so different callbacks stay different dict keys."""
    if full_name not in _PLACEHOLDERS:
        base = InertDict if full_name.endswith("AttributeDict") else Inert
        _PLACEHOLDERS[full_name] = type(full_name.rsplit(".", 1)[1], (base,), {"__module__": "sandcastle.inert", "original": full_name})
    return _PLACEHOLDERS[full_name]


NOT_NEEDED = frozenset({"builtins.bytearray"})  # allowed by weights_only, but bytearray(10**11) would fill the memory


class RestrictedUnpickler(pickle._Unpickler):
    """The pure-Python unpickler, so that BUILD, not only GLOBAL, can be restricted: state may be set on
    placeholders only, never on a class or function the pickle names (which would change it for the
    whole process)."""

    def find_class(self, module: str, name: str):
        from torch._weights_only_unpickler import _get_allowed_globals

        full_name = f"{module}.{name}"
        allowed = _get_allowed_globals()  # tensors, storages, dtypes, OrderedDict…: what weights_only=True accepts
        if full_name in allowed and full_name not in NOT_NEEDED:
            return allowed[full_name]
        if full_name in PLACEHOLDER_NAMES:
            return placeholder(full_name)
        raise pickle.UnpicklingError(f"global '{full_name}' is not allowed")

    def load_build(self) -> None:
        if not isinstance(self.stack[-2], (Inert, InertDict)):
            raise pickle.UnpicklingError(f"setting the state of a {type(self.stack[-2]).__name__} is not allowed")
        super().load_build()

    dispatch = dict(pickle._Unpickler.dispatch)
    dispatch[pickle.BUILD[0]] = load_build


class restricted_pickle:  # the pickle_module torch.load takes: its Unpickler is the restricted one
    Unpickler = RestrictedUnpickler
    __name__ = "sandcastle_restricted_pickle"

    @staticmethod
    def load(file, **kwargs):
        return RestrictedUnpickler(file, **kwargs).load()


def read_checkpoint(path: str | Path) -> dict:
    name = Path(path).name
    try:
        check_archive_size(path)
        # Not weights_only=True: it lets bytearray(10**11) fill the memory, and refuses the class references
        # every official checkpoint carries. This reader allows less than it and knows those references.
        checkpoint = torch.load(str(path), map_location="cpu", weights_only=False, pickle_module=restricted_pickle)
    except FileNotFoundError:
        raise InputError(f"There is no checkpoint called {name}.") from None
    except ModelUnavailable as exc:
        raise InputError(str(exc)) from None
    except pickle.UnpicklingError as exc:
        raise InputError(
            f"{name} carries pickled Python objects besides weights, which could run code; it was refused "
            f"({str(exc).splitlines()[-1][:160]})."
        ) from None
    except Exception as exc:  # a damaged file: zip, pickle or tensor data that does not hold together
        raise InputError(f"{name} could not be read as a PyTorch checkpoint ({str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__}).") from None
    if not isinstance(checkpoint, dict):
        raise InputError(f"{name} is not a checkpoint dictionary.")
    return checkpoint.get("state_dict", checkpoint)


def whole(name: str, tensor: torch.Tensor, budget: list[int]) -> torch.Tensor:
    """A tensor that owns the bytes it claims: a view whose strides repeat a small storage (which would
    become real memory when made contiguous) or more data than the file holds is refused."""
    needed = tensor.numel() * tensor.element_size()
    if needed > tensor.untyped_storage().nbytes() or needed > budget[0]:
        raise InputError(f"The checkpoint's tensor {name} claims more data than the file holds; it was refused.")
    budget[0] -= needed
    return tensor.detach().contiguous()


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
    if not all(isinstance(t, torch.Tensor) for t in (weight, bias, mean, std)):
        raise InputError("The classifier's weights in the checkpoint are not tensors; is it the DiffAE attribute classifier?")
    return {"weight": weight, "bias": bias, "mean": mean.reshape(-1), "std": std.reshape(-1)}


def convert(checkpoint: str | Path, out: str | Path) -> str:
    """Write the autoencoder's EMA weights, or the classifier, as safetensors. Returns which it was."""
    from safetensors.torch import save_file

    state = read_checkpoint(checkpoint)
    kind = "classifier" if "classifier.weight" in state else "autoencoder"
    tensors = classifier_weights(state) if kind == "classifier" else ema_weights(state)
    budget = [2 * Path(checkpoint).stat().st_size]  # the weights kept are a part of the file; twice it leaves room for rounding
    save_file({k: whole(k, v, budget) for k, v in tensors.items()}, str(out), metadata={"sandcastle": f"diffae-{kind}"})
    return kind
