"""Finding, loading and caching models.

A model source is a Hugging Face hub id, a local diffusers folder, or a single `.safetensors`
file. Device and dtype are explicit: the caller passes them or takes `pick_device`/`pick_dtype`.
Weights are read from safetensors only; pickle-based files are refused.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# A hub call must never hang the app: bound the metadata and download timeouts (seconds)
# unless the person set their own. huggingface_hub reads these when it is first imported.
os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", "10")
os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", "30")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import torch  # noqa: E402

from engines.api import InputError, ModelUnavailable  # noqa: E402

log = logging.getLogger(__name__)


def _quiet_libraries() -> None:
    """Progress bars and per-load chatter from diffusers/transformers belong in no terminal of ours."""
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


_quiet_libraries()

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")
PICKLE_SUFFIXES = (".ckpt", ".bin", ".pt", ".pth")


# ---- device and precision ---------------------------------------------------------------------


def pick_device(requested: str | None = None) -> torch.device:
    """The requested device, or CUDA, then Apple MPS, then the CPU."""
    if requested:
        if requested.startswith("cuda") and not torch.cuda.is_available():
            raise InputError("A CUDA device was asked for, but this computer has none that PyTorch can use.")
        if requested == "mps" and not torch.backends.mps.is_available():
            raise InputError("Apple's MPS device was asked for, but it is not available here.")
        return torch.device(requested)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def pick_dtype(device: torch.device, requested: str | None = None) -> torch.dtype:
    """float16 on CUDA and MPS, float32 on the CPU (half precision is slow or unsupported there)."""
    if requested:
        try:
            dtype = {"float16": torch.float16, "fp16": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
                     "float32": torch.float32, "fp32": torch.float32}[requested]
        except KeyError:
            raise InputError(f"Precision must be float16, bfloat16 or float32, not {requested!r}.") from None
        return dtype
    return torch.float16 if device.type in ("cuda", "mps") else torch.float32


# ---- sources ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSource:
    kind: str  # "hub", "folder" or "file"
    location: str

    @property
    def label(self) -> str:
        return self.location if self.kind == "hub" else Path(self.location).name


def resolve_source(model: str) -> ModelSource:
    """Decide what `model` names, without loading anything. Raises ModelUnavailable for bad paths."""
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise ModelUnavailable(f"{path} is a folder but not a diffusers model (it has no model_index.json).")
        return ModelSource("folder", str(path))
    if path.is_file():
        if path.suffix.lower() in PICKLE_SUFFIXES:
            raise ModelUnavailable(
                f"{path.name} is a pickle-based checkpoint, which can run code when loaded; "
                "Sandcastle loads .safetensors files only."
            )
        if path.suffix.lower() != ".safetensors":
            raise ModelUnavailable(f"{path.name} is not a model file Sandcastle can load (use a .safetensors file or a diffusers folder).")
        return ModelSource("file", str(path))
    if HUB_ID.match(model) and not model.startswith((".", "/", "~")):
        return ModelSource("hub", model)
    raise ModelUnavailable(f"There is no model folder or file at {model}.")


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def unavailable_message(source: ModelSource, reason: str = "") -> str:
    if source.kind == "hub":
        why = "Sandcastle is offline (HF_HUB_OFFLINE is set)" if offline() else "it could not be downloaded"
        return (
            f"The model {source.location} is not on this computer and {why}. "
            f"Download it on a connected machine (huggingface-cli download {source.location}) and copy the "
            "Hugging Face cache folder here, or point Sandcastle at a local copy with --model /path/to/folder."
        )
    return f"The model at {source.location} could not be loaded: {reason}"


# ---- loading ----------------------------------------------------------------------------------


@dataclass
class LoadedPipeline:
    pipe: Any
    family: str  # "sd" (SD 1.x/2.x) or "sdxl"
    native: int  # the side, in pixels, the model was trained at
    unet_channels: int  # 9 for dedicated inpainting UNets, 4 for ordinary ones
    source: ModelSource


class PipelineCache:
    """Loaded pipelines by (purpose, source, device, dtype), least recently used dropped first."""

    def __init__(self, max_entries: int = 2) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple, LoadedPipeline] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple) -> LoadedPipeline | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
            return entry

    def put(self, key: tuple, entry: LoadedPipeline) -> None:
        with self._lock:
            self._entries[key] = entry
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


CACHE = PipelineCache()


def load_inpaint_pipeline(model: str, device: torch.device, dtype: torch.dtype) -> LoadedPipeline:
    """An SD 1.x/2.x or SDXL inpainting pipeline for `model`, 9- or 4-channel, cached."""
    source = resolve_source(model)
    key = ("inpaint", source, str(device), str(dtype))
    cached = CACHE.get(key)
    if cached is not None:
        return cached
    from diffusers import AutoPipelineForInpainting, StableDiffusionInpaintPipeline, StableDiffusionXLInpaintPipeline

    try:
        if source.kind == "file":
            cls = StableDiffusionXLInpaintPipeline if _single_file_is_sdxl(source.location) else StableDiffusionInpaintPipeline
            pipe = cls.from_single_file(source.location, torch_dtype=dtype, local_files_only=offline())
        else:
            # AutoPipeline maps an ordinary text-to-image checkpoint to its inpainting pipeline,
            # which then blends latents (4-channel UNet) instead of conditioning on the mask.
            pipe = AutoPipelineForInpainting.from_pretrained(
                source.location, torch_dtype=dtype, use_safetensors=True, local_files_only=offline() or source.kind == "folder",
            )
    except Exception as exc:  # missing files, offline hub, a truncated or corrupt weight file, a wrong config
        log.info("loading %s failed: %s", source.location, exc)
        raise ModelUnavailable(unavailable_message(source, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)) from None
    if not isinstance(pipe, (StableDiffusionInpaintPipeline, StableDiffusionXLInpaintPipeline)):
        raise ModelUnavailable(f"{source.label} is a {type(pipe).__name__}; inpainting needs a Stable Diffusion 1.x, 2.x or SDXL model.")
    if getattr(pipe, "safety_checker", None) is not None:
        pipe.safety_checker = None  # the editor shows what the person asked for; it does not censor their own photos
    pipe.set_progress_bar_config(disable=True)
    pipe.to(device)
    family = "sdxl" if isinstance(pipe, StableDiffusionXLInpaintPipeline) else "sd"
    loaded = LoadedPipeline(
        pipe=pipe,
        family=family,
        native=int(pipe.unet.config.sample_size) * int(pipe.vae_scale_factor),
        unet_channels=int(pipe.unet.config.in_channels),
        source=source,
    )
    CACHE.put(key, loaded)
    return loaded


def _single_file_is_sdxl(path: str) -> bool:
    from safetensors import safe_open

    with safe_open(path, framework="pt") as f:
        return any(k.startswith("conditioner.embedders.1") for k in f.keys())


# ---- schedulers -------------------------------------------------------------------------------

SCHEDULERS = ("DDIM", "Euler ancestral", "DPM++ 2M", "DPM++ 2M Karras")


def make_scheduler(name: str, config: Any) -> Any:
    """A fresh scheduler of the named kind built from the model's own scheduler config."""
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler

    if name == "DDIM":
        return DDIMScheduler.from_config(config)
    if name == "Euler ancestral":
        return EulerAncestralDiscreteScheduler.from_config(config)
    if name == "DPM++ 2M":
        return DPMSolverMultistepScheduler.from_config(config, algorithm_type="dpmsolver++", solver_order=2)
    if name == "DPM++ 2M Karras":
        return DPMSolverMultistepScheduler.from_config(config, algorithm_type="dpmsolver++", solver_order=2, use_karras_sigmas=True)
    raise InputError(f"Unknown scheduler {name!r}; choose one of {', '.join(SCHEDULERS)}.")


def is_out_of_memory(exc: BaseException) -> bool:
    oom = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError
    return isinstance(exc, oom) or (isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower())
