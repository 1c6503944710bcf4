"""Loading and caching models.

What a model name means (preset, hub id, diffusers folder, single `.safetensors` file) is decided
in `engines.sources`; this module turns a source into a loaded diffusers pipeline. Device and dtype
are explicit: the caller passes them or takes `pick_device`/`pick_dtype`. Weights are read from
safetensors only; pickle-based files are refused unless the person allowed that one file.
"""

from __future__ import annotations

import importlib.resources
import json
import logging
import math
import os
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from engines import catalog, checkpoints, kinds, sources  # sources bounds the hub time-outs; huggingface_hub is imported only below, by diffusers
from engines.api import CancelToken, InputError, ModelUnavailable, OutOfMemory
from engines.folders import cache_folder
from engines.sources import ModelSource

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


# ---- loading ----------------------------------------------------------------------------------

PURPOSES = ("inpaint", "img2img", "instruct")
MEMORY_MODES = ("off", "balanced", "lowest")
DIT_MEMORY_MODES = MEMORY_MODES + ("quantized",)  # FLUX and Qwen models only: see choose_dit_memory_mode
GIB = 1024**3


@dataclass
class LoadedPipeline:
    pipe: Any
    family: str  # "sd" (SD 1.x/2.x) or "sdxl"
    native: int  # the side, in pixels, the model was trained at
    unet_channels: int  # 9 for dedicated inpainting UNets, 4 for ordinary ones
    source: ModelSource
    memory: str = "off"  # the low-memory mode it was set up with
    device: str = "cpu"
    compiled: bool = False  # the UNet went through torch.compile (static shapes: one compile per working size)
    compiled_sizes: set = field(default_factory=set)  # working sizes compiled in this process


def module_bytes(pipe: Any) -> dict[int, int]:
    """Parameter and buffer bytes of each distinct module of a pipeline, by the module's id."""
    sizes = {}
    for component in getattr(pipe, "components", {}).values():
        if isinstance(component, torch.nn.Module) and id(component) not in sizes:
            tensors = list(component.parameters()) + list(component.buffers())
            sizes[id(component)] = sum(t.numel() * t.element_size() for t in tensors)
    return sizes


def default_budget(device: torch.device) -> int:
    """How many bytes of loaded models to keep per device: 90% of the GPU, half the RAM on the CPU."""
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory * 0.9)
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") * 0.5)
    except (ValueError, OSError, AttributeError):
        return 8 * GIB


class PipelineCache:
    """Loaded pipelines, kept while they fit a byte budget per device; least recently used go first.

    Pipelines made from one another with `from_pipe` share their modules, and shared modules
    are counted once, so a second task on the same base model costs (almost) nothing.
    """

    def __init__(self, budget: int | None = None, max_entries: int = 6) -> None:
        self.budget = budget  # None: default_budget(device)
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple, LoadedPipeline] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple) -> LoadedPipeline | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
            return entry

    def sibling(self, source: ModelSource, device: str, dtype: str, memory: str, compile: bool = False) -> LoadedPipeline | None:
        """A loaded pipeline of the same model, device, precision, memory mode and compilation (any purpose)."""
        with self._lock:
            for key, entry in reversed(self._entries.items()):
                if key[1:] == (source, device, dtype, memory, compile):
                    return entry
        return None

    def bytes_on(self, device: str) -> int:
        with self._lock:
            return self._bytes_on(device)

    def _bytes_on(self, device: str) -> int:
        sizes: dict[int, int] = {}
        for entry in self._entries.values():
            if entry.device == device:
                sizes.update(module_bytes(entry.pipe))
        return sum(sizes.values())

    def put(self, key: tuple, entry: LoadedPipeline, budget: int | None = None) -> list[tuple]:
        """Add an entry, then drop least recently used ones (never this one) until the device's models fit
        `budget`. Returns the keys dropped."""
        budget = budget if budget is not None else self.budget
        dropped = []
        with self._lock:
            self._entries[key] = entry
            self._entries.move_to_end(key)
            for old in list(self._entries):
                over_count = len(self._entries) > self.max_entries
                over_bytes = budget is not None and self._bytes_on(entry.device) > budget
                if old == key or not (over_count or over_bytes):
                    continue
                if over_count or self._entries[old].device == entry.device:
                    del self._entries[old]
                    dropped.append(old)
        if dropped and entry.device.startswith("cuda"):
            torch.cuda.empty_cache()
        return dropped

    def keys(self) -> list[tuple]:
        with self._lock:
            return list(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


CACHE = PipelineCache()


def choose_memory_mode(requested: str | None, device: torch.device, model_bytes: int, free_bytes: int | None, family: str) -> str:
    """The low-memory mode: the person's choice, or for "auto" what fits the free graphics memory.

    `working` is a generous allowance for activations and the VAE decode at the model's native size.
    With enough room nothing is changed (fastest); with less, attention slicing and VAE tiling shrink
    the activations; with less still, model CPU offload keeps only the running component on the GPU.
    """
    if requested and requested != "auto":
        if requested not in MEMORY_MODES:
            raise InputError(f"Low-memory mode must be auto, {', '.join(MEMORY_MODES)}; not {requested!r}.")
        return requested
    if device.type != "cuda" or free_bytes is None:
        return "off"
    working = {"sd": 2, "sdxl": 4}[family] * GIB  # (diffusion transformers: choose_dit_memory_mode)
    if free_bytes >= model_bytes + working * 1.5:
        return "off"
    if free_bytes >= model_bytes + working * 0.5:
        return "balanced"
    return "lowest"


def _apply_memory_mode(pipe: Any, mode: str, device: torch.device) -> None:
    if mode in ("balanced", "lowest"):
        pipe.enable_attention_slicing()
        if hasattr(pipe, "vae") and hasattr(pipe.vae, "enable_tiling"):
            pipe.vae.enable_tiling()
    if mode == "lowest" and device.type != "cpu":
        pipe.enable_model_cpu_offload(device=device)  # each component moves to the GPU only while it runs
    else:
        pipe.to(device)


COMPILE_SIZES_KEPT = 32  # torch.compile keeps this many compiled shapes per function (working sizes × batch sizes)


def _tune_for_speed(pipe: Any, device: torch.device, compile: bool) -> None:
    """Only what a benchmark measured faster (benchmarks/RESULTS.md). Channels-last is not used: on an
    H200 it made SD 1.5 and SDXL 9–17 % slower in fp16, and no device measured it faster. PyTorch's
    scaled-dot-product attention is diffusers' default processor with torch 2: nothing to do.

    With `compile`, the whole UNet goes through torch.compile with static shapes and one graph
    (fullgraph): on an H200 that ran SD 1.5 at 61.8 it/s against 36.4 eager, after a 43 s first call,
    while dynamic shapes had not finished compiling in three minutes and regional compilation was
    slower than eager. Static shapes compile once per working size, so with compile on, sd.py snaps
    working sizes to a few buckets (imaging.bucket_size), and the compiled kernels are kept in the
    cache folder (TORCHINDUCTOR_CACHE_DIR), so the next start compiles from there."""
    if compile:
        import torch._dynamo

        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache_folder() / "torch-compile"))
        torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, COMPILE_SIZES_KEPT)
        pipe.unet = torch.compile(pipe.unet, fullgraph=True, dynamic=False)


def _auto_class(purpose: str) -> Any:
    from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting, StableDiffusionInstructPix2PixPipeline

    # InstructPix2Pix has no AutoPipeline mapping; its 8-channel UNet only fits its own pipeline.
    return {"inpaint": AutoPipelineForInpainting, "img2img": AutoPipelineForImage2Image,
            "instruct": StableDiffusionInstructPix2PixPipeline}[purpose]


def import_pipeline_code() -> None:
    """Import the code that loading a Stable Diffusion pipeline runs: diffusers' pipelines and
    schedulers, transformers' CLIP, accelerate and the scipy parts they pull in (about 1,300 modules).

    Importing is Python holding the GIL, with C extensions that hold it for tens of milliseconds
    at a time, so done during the first Generate it froze the window for 250-300 ms
    (benchmarks/first_generate.py). The SD engines call this when they are created, on the worker
    thread while the window says the engine is loading, so the first Generate only reads weights.
    """
    import diffusers
    import transformers

    for name in ("StableDiffusionInpaintPipeline", "StableDiffusionImg2ImgPipeline", "StableDiffusionInstructPix2PixPipeline",
                 "StableDiffusionXLInpaintPipeline", "StableDiffusionXLImg2ImgPipeline", "AutoPipelineForInpainting",
                 "AutoPipelineForImage2Image", "AutoencoderKL", "UNet2DConditionModel", "DDIMScheduler", "PNDMScheduler",
                 "EulerAncestralDiscreteScheduler", "DPMSolverMultistepScheduler", "EulerDiscreteScheduler"):
        getattr(diffusers, name)  # diffusers imports lazily, on first attribute access
    for name in ("CLIPTextModel", "CLIPTextModelWithProjection", "CLIPTokenizer", "CLIPTokenizerFast", "CLIPImageProcessor"):
        getattr(transformers, name)


def _family_of(pipe: Any) -> str:
    return "sdxl" if "XL" in type(pipe).__name__ else "sd"


def is_loaded(purpose: str, model: str, device: torch.device, dtype: torch.dtype, memory: str | None = None,
              allow_pickle: tuple[str, ...] = (), compile: bool = False) -> bool:
    """Whether load_pipeline would answer from memory (so nothing needs saying about loading)."""
    try:
        source = sources.resolve_source(model, allow_pickle, purpose)
    except ModelUnavailable:
        return False
    compile = compile and kinds.dit_kind(model, allow_pickle) is None  # as load_pipeline keys it
    return CACHE.get(_cache_key(purpose, source, device, dtype, memory, compile)) is not None


def _cache_key(purpose: str, source: ModelSource, device: torch.device, dtype: torch.dtype, memory: str | None, compile: bool) -> tuple:
    return (purpose, source, str(device), str(dtype), memory or "auto", compile)


def load_pipeline(
    purpose: str,
    model: str,
    device: torch.device,
    dtype: torch.dtype,
    memory: str | None = None,
    allow_pickle: tuple[str, ...] = (),
    compile: bool = False,
    on_stage: Callable[[str], None] | None = None,
    cancel: CancelToken | None = None,
) -> LoadedPipeline:
    """An SD 1.x/2.x or SDXL pipeline for `purpose` ("inpaint" or "img2img"), cached.

    `on_stage` hears what a long first load is doing (making the 8-bit copy of a transformer), and
    `cancel` stops that work.

    Hub models load from the local cache only: downloads go through engines.catalog, which shows
    progress and can be cancelled. A pipeline of the same model already loaded for another purpose
    lends its modules (diffusers' from_pipe) instead of loading the weights again.
    """
    from diffusers import StableDiffusionInpaintPipeline, StableDiffusionXLInpaintPipeline

    source = sources.resolve_source(model, allow_pickle, purpose)
    kind = kinds.dit_kind(model, allow_pickle)
    compile = compile and kind is None  # torch.compile is set up for the SD UNet only
    requested = memory or "auto"
    key = _cache_key(purpose, source, device, dtype, memory, compile)
    cached = CACHE.get(key)
    if cached is not None:
        return cached
    if kind is not None:
        loaded = _dit_pipeline(kind, purpose, source, device, dtype, memory, on_stage, cancel)
        CACHE.put(key, loaded, CACHE.budget if CACHE.budget is not None else default_budget(device))
        return loaded
    sibling = CACHE.sibling(source, str(device), str(dtype), requested, compile)
    if sibling is not None:
        pipe = _auto_class(purpose).from_pipe(sibling.pipe)
        pipe.set_progress_bar_config(disable=True)
        mode = sibling.memory
    else:
        pipe = _load_fresh(purpose, source, dtype)
        mode = choose_memory_mode(memory, device, sum(module_bytes(pipe).values()), _free_bytes(device), _family_of(pipe))
        _set_up_memory(pipe, mode, device, source, _apply_memory_mode)
        _tune_for_speed(pipe, device, compile)
    if purpose == "inpaint" and not isinstance(pipe, (StableDiffusionInpaintPipeline, StableDiffusionXLInpaintPipeline)):
        raise ModelUnavailable(f"{source.label} is a {type(pipe).__name__}; inpainting needs a Stable Diffusion 1.x, 2.x or SDXL model.")
    if purpose == "instruct" and int(pipe.unet.config.in_channels) != 8:
        raise ModelUnavailable(f"{source.label} is not an InstructPix2Pix model (its UNet takes {pipe.unet.config.in_channels} channels, not 8).")
    if purpose == "img2img" and int(pipe.unet.config.in_channels) != 4:
        raise ModelUnavailable(f"{source.label} cannot do img2img: its UNet takes {pipe.unet.config.in_channels} channels; choose an ordinary SD model.")
    loaded = LoadedPipeline(
        pipe=pipe, family=_family_of(pipe), native=int(pipe.unet.config.sample_size) * int(pipe.vae_scale_factor),
        unet_channels=int(pipe.unet.config.in_channels), source=source, memory=mode, device=str(device), compiled=compile,
    )
    CACHE.put(key, loaded, CACHE.budget if CACHE.budget is not None else default_budget(device))
    return loaded


def _dit_pipeline(kind: str, purpose: str, source: ModelSource, device: torch.device, dtype: torch.dtype, memory: str | None,
                  on_stage: Callable[[str], None] | None = None, cancel: CancelToken | None = None) -> LoadedPipeline:
    """A diffusion-transformer pipeline for `purpose`: from a loaded sibling's modules when the same
    model serves another task already, else read from disk and set up for the memory mode (for
    "quantized", with its transformer swapped for an 8-bit copy first)."""
    sibling = CACHE.sibling(source, str(device), str(dtype), memory or "auto", False)
    if sibling is not None:
        pipe = dit_pipeline_class(kind, purpose, source.label).from_pipe(sibling.pipe)
        pipe.set_progress_bar_config(disable=True)
        mode = sibling.memory
    else:
        folder = Path(_local_location(source)) if source.kind != "file" else None
        if folder is None or not (folder / "model_index.json").is_file():
            # A transformer file (never quantized again; a GGUF one is counted at its own size), or a
            # model not on this computer, which _load_dit refuses with its sentence.
            pipe = _load_dit(kind, purpose, source, dtype)
            mode = choose_dit_memory_mode(memory, device, component_bytes(pipe), _free_bytes(device), None)
        else:
            # Decided from the weight files' headers before anything loads, so that the quantized mode
            # never holds the full transformer beside the rest (Qwen-Image-Edit's alone is 41 GB).
            sizes, eight_bit = planned_component_bytes(folder, dtype)
            mode = choose_dit_memory_mode(memory, device, sizes, _free_bytes(device), eight_bit)
            transformer = quantized_transformer(kind, source, dtype, on_stage, cancel) if mode == "quantized" else None
            pipe = _load_dit(kind, purpose, source, dtype, transformer)
        _set_up_memory(pipe, mode, device, source, _apply_dit_memory_mode)
    return LoadedPipeline(pipe=pipe, family=kind, native=kinds.DIT_NATIVE, unet_channels=0, source=source, memory=mode, device=str(device))


def _free_bytes(device: torch.device) -> int | None:
    return torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else None


def _set_up_memory(pipe: Any, mode: str, device: torch.device, source: ModelSource, apply) -> None:
    """Set a freshly loaded pipeline up for the memory `mode` with `apply`."""
    try:
        apply(pipe, mode, device)
    except Exception as exc:
        if is_out_of_memory(exc):
            raise OutOfMemory(f"{source.label} does not fit in the graphics memory: set Low-memory mode to lowest in Settings.") from None
        raise


# What a diffusion transformer needs besides its weights, at a megapixel: its activations (FLUX.2
# [klein] at 1024² with a reference picture attends over about 8,700 tokens) and the VAE decode; and
# what a text encoder needs for a prompt. Estimates, generous; the GPU table (benchmarks/gpu_table.sh)
# is where they are to be checked against peak memory.
DIT_WORKING = 6 * GIB
TEXT_WORKING = 1 * GIB


def component_bytes(pipe: Any) -> dict[str, int]:
    """Parameter and buffer bytes of each model component of a pipeline, by its name."""
    sizes = {}
    for name, component in getattr(pipe, "components", {}).items():
        if isinstance(component, torch.nn.Module):
            sizes[name] = sum(t.numel() * t.element_size() for t in list(component.parameters()) + list(component.buffers()))
    return sizes


def choose_dit_memory_mode(requested: str | None, device: torch.device, components: dict[str, int], free_bytes: int | None,
                           eight_bit: int | None) -> str:
    """The memory mode for a diffusion transformer: the person's choice, or for "auto" the fastest
    that fits the free graphics memory. In order: "off" (every component on the GPU); "balanced"
    (model CPU offload: one component at a time, so the largest must fit with its working memory);
    "quantized" (the transformer as 8-bit Q8_0, about half its bfloat16 bytes, with model CPU
    offload: FLUX.2 [klein] 4B's 7.75 GB transformer becomes 4.1 GB, which a 12 GB card holds with
    room to work); "lowest" (group offload: layers stream in as they run; fits almost anything, slowest).
    `eight_bit` is the transformer's size as Q8_0, None when it cannot be quantized (a transformer read
    from a GGUF file is counted at its quantized size already)."""
    if requested and requested != "auto":
        if requested not in DIT_MEMORY_MODES:
            raise InputError(f"Low-memory mode must be auto, {', '.join(DIT_MEMORY_MODES)}; not {requested!r}.")
        if requested == "quantized" and eight_bit is None:
            raise InputError("Low-memory mode quantized makes an 8-bit copy of a diffusers model's transformer; this model's "
                             "transformer is a single file (already quantized if it is a GGUF file): choose another mode.")
        return requested
    if device.type != "cuda" or free_bytes is None:
        return "off"
    transformer = components.get("transformer", 0)
    others = max((size for name, size in components.items() if name != "transformer"), default=0)
    if free_bytes >= sum(components.values()) + DIT_WORKING:
        return "off"
    if free_bytes >= max(transformer + DIT_WORKING, others + TEXT_WORKING):
        return "balanced"
    if eight_bit is not None and free_bytes >= max(eight_bit + DIT_WORKING, others + TEXT_WORKING):
        return "quantized"
    return "lowest"


def _q8_0_blocks(shape: tuple[int, ...]) -> bool:
    """Whether write_q8_0 stores a tensor as Q8_0: a 2-D weight whose rows divide into 32-weight blocks."""
    return len(shape) == 2 and shape[1] % 32 == 0


def _q8_0_size(shape: tuple[int, ...]) -> int:
    count = math.prod(shape)
    return count * 34 // 32 if _q8_0_blocks(shape) else count * 4  # 34 bytes per 32 weights; the rest float32


def q8_0_bytes(module: Any) -> int:
    """The size of `module`'s weights as write_q8_0 writes them."""
    return sum(_q8_0_size(tuple(t.shape)) for t in module.state_dict().values())


STORED_BYTES = {"F64": 8, "I64": 8, "F32": 4, "I32": 4, "F16": 2, "BF16": 2, "I16": 2}  # safetensors dtypes; 1 byte otherwise


def planned_component_bytes(folder: Path, dtype: torch.dtype) -> tuple[dict[str, int], int]:
    """Each model component's bytes once loaded in `dtype`, and the transformer's size as Q8_0, read
    from a diffusers folder's safetensors headers (no weights): floating-point tensors are converted
    to `dtype` as they load, others keep their stored size."""
    index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    sizes, eight_bit = {}, 0
    for name, entry in index.items():
        if name.startswith("_") or not isinstance(entry, list) or None in entry or not (folder / name).is_dir():
            continue
        files = catalog.weight_set(sorted(p.name for p in (folder / name).glob("*.safetensors")))
        total = 0
        for file in files:
            for stored, shape in checkpoints.read_header(folder / name / file).values():
                size = dtype.itemsize if stored.startswith(("F", "BF")) else STORED_BYTES.get(stored, 1)
                total += math.prod(shape) * size
                if name == "transformer":
                    eight_bit += _q8_0_size(shape)
        if files:
            sizes[name] = total
    return sizes, eight_bit


def is_quantized(module: Any) -> bool:
    """Whether a module holds GGUF-quantized weights (read from a .gguf file)."""
    return any(type(p).__name__ == "GGUFParameter" for p in module.parameters())


def quantized_transformer(kind: str, source: ModelSource, dtype: torch.dtype, on_stage: Callable[[str], None] | None = None,
                          cancel: CancelToken | None = None) -> Any:
    """The model's transformer as Q8_0, through diffusers' GGUF support: each layer keeps its 8-bit
    weights and dequantizes them to `dtype` as it runs. The 8-bit copy is written once to the cache
    folder from the full transformer, loaded alone for it (for FLUX.2 [klein] 4B about a minute of
    quantizing on the CPU), and read from there afterwards."""
    import shutil

    import diffusers

    path = _quantized_copy_path(source)
    folder = Path(_local_location(source))
    model_class = getattr(diffusers, TRANSFORMER_CLASSES[kind])
    if not path.is_file():
        if on_stage is not None:
            on_stage(f"Making an 8-bit copy of {source.label}'s transformer to fit the graphics memory (once; it is kept)…")
        try:
            transformer = model_class.from_pretrained(str(folder), subfolder="transformer", torch_dtype=dtype, use_safetensors=True,
                                                      local_files_only=True)
        except Exception as exc:
            raise _unavailable(source, exc) from None
        needed = q8_0_bytes(transformer)
        path.parent.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(path.parent).free
        if needed > free:
            raise ModelUnavailable(f"The 8-bit copy of {source.label}'s transformer needs {needed / 1e9:.1f} GB but only {free / 1e9:.1f} GB "
                                   f"is free in {path.parent}: free some space, or set Low-memory mode to lowest in Settings.")
        try:
            write_q8_0(transformer, path, cancel)
        except OSError as exc:
            raise ModelUnavailable(f"The 8-bit copy of {source.label}'s transformer could not be written to {path.parent} "
                                   f"({exc.strerror or exc}): set Low-memory mode to lowest in Settings.") from None
        del transformer  # its memory back before the copy loads
    log.info("running %s's transformer 8-bit (Q8_0) from %s", source.label, path)
    try:
        return model_class.from_single_file(str(path), config=str(folder), subfolder="transformer", torch_dtype=dtype,
                                            quantization_config=diffusers.GGUFQuantizationConfig(compute_dtype=dtype),
                                            local_files_only=True)
    except Exception as exc:  # a copy damaged on disk: made again next time instead of failing forever
        path.unlink(missing_ok=True)
        raise ModelUnavailable(f"The 8-bit copy of {source.label}'s transformer could not be read ({type(exc).__name__}); it was "
                               "removed, and the next Generate makes it again.") from None


def _quantized_copy_path(source: ModelSource) -> Path:
    """Where the 8-bit copy of a model's transformer is kept: named by the model and by what its weights
    are (the folder's snapshot, or a local folder's weight files' sizes and times), so a changed model
    is quantized afresh."""
    import hashlib

    folder = Path(_local_location(source)) / "transformer"
    identity = [str(folder.resolve())]
    for file in sorted(folder.glob("*.safetensors")):
        stat = file.stat()
        identity.append(f"{file.name}:{stat.st_size}:{stat.st_mtime_ns}")
    digest = hashlib.sha256("\n".join(identity).encode()).hexdigest()[:16]
    name = re.sub(r"[^\w.-]+", "-", source.label)[:60]
    return cache_folder() / "quantized" / f"{name}-{digest}.Q8_0.gguf"


def write_q8_0(module: Any, path: Path, cancel: CancelToken | None = None) -> None:
    """Write a module's weights as a GGUF file with diffusers' own names (which from_single_file loads
    without conversion): Q8_0 for 2-D weights whose rows divide into 32-weight blocks, as llama.cpp's
    converter and city96's files do, float32 for the rest (norms, biases; a few MB). Streamed tensor by
    tensor (`cancel` is checked between tensors), and written under a temporary name so an interrupted
    write is never taken for a copy."""
    import gguf
    import numpy as np

    q8 = gguf.GGMLQuantizationType.Q8_0
    block, block_bytes = gguf.GGML_QUANT_SIZES[q8]
    state = module.state_dict()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    writer = gguf.GGUFWriter(str(partial), arch="sandcastle-q8")
    quantize = {name: _q8_0_blocks(tuple(t.shape)) for name, t in state.items()}
    for name, tensor in state.items():
        if quantize[name]:
            rows, columns = tensor.shape
            writer.add_tensor_info(name, (rows, columns // block * block_bytes), np.dtype(np.uint8), rows * columns // block * block_bytes, q8)
        else:
            writer.add_tensor_info(name, tuple(tensor.shape), np.dtype(np.float32), tensor.numel() * 4)
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for name, tensor in state.items():
            if cancel is not None:
                cancel.raise_if_cancelled()
            array = tensor.detach().to("cpu", torch.float32).numpy()
            writer.write_tensor_data(gguf.quants.quantize(array, q8) if quantize[name] else array)
        writer.close()
        os.replace(partial, path)
    except BaseException:
        writer.close()
        partial.unlink(missing_ok=True)
        raise


def _local_location(source: ModelSource) -> str:
    """Where a folder or hub model's files are on this computer (a hub id not installed stays as it is)."""
    if source.kind == "hub":
        return str(catalog.installed_path(source.location) or source.location)
    return source.location


def _unavailable(source: ModelSource, exc: Exception) -> ModelUnavailable:
    """The one sentence for a model diffusers could not load: not downloaded (hub), or the first line of why."""
    log.info("loading %s failed: %s", source.location, exc)
    if source.kind == "hub":
        return ModelUnavailable(sources.unavailable_message(source))
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return ModelUnavailable(sources.unavailable_message(source, re.sub(r"\x1b\[[0-9;]*m", "", reason)[:300]))


def _load_fresh(purpose: str, source: ModelSource, dtype: torch.dtype) -> Any:
    try:
        if source.kind == "file":
            pipe = _load_single_file(purpose, source, dtype)
        else:
            # AutoPipeline maps an ordinary text-to-image checkpoint to the pipeline for `purpose`
            # (for inpainting: latent blending with a 4-channel UNet).
            location = _local_location(source)
            variant = "fp16" if _has_fp16_weights(Path(location)) else None
            pipe = _auto_class(purpose).from_pretrained(
                location, torch_dtype=dtype, use_safetensors=True, local_files_only=True, variant=variant,
                **_absent_components(Path(location)),
            )
    except ModelUnavailable:
        raise
    except Exception as exc:  # missing files, not downloaded, a truncated or corrupt weight file, a wrong config
        raise _unavailable(source, exc) from None
    if getattr(pipe, "safety_checker", None) is not None:
        pipe.safety_checker = None  # the editor shows what the person asked for; it does not censor their own photos
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _absent_components(folder: Path) -> dict[str, Any]:
    """None for each component model_index.json lists but the folder lacks (the safety checker and its
    image processor are never downloaded), so diffusers builds the pipeline without them."""
    try:
        index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    absent: dict[str, Any] = {
        name: None for name, value in index.items()
        if not name.startswith("_") and isinstance(value, list) and value and value[0] is not None and not (folder / name).is_dir()
    }
    if absent.get("safety_checker", 0) is None and "requires_safety_checker" in index:
        absent["requires_safety_checker"] = False
    return absent


def _has_fp16_weights(folder: Path) -> bool:
    return folder.is_dir() and any(folder.glob("*/*.fp16.safetensors"))


def _load_single_file(purpose: str, source: ModelSource, dtype: torch.dtype) -> Any:
    """A single checkpoint file in the original SD layout, with the configuration Sandcastle ships for
    its model type (resources/checkpoints): nothing is fetched, online or off.

    The type is diffusers' own `infer_diffusers_model_type`, read from the header's shapes without
    loading a weight. A 4-channel checkpoint serves inpainting too: diffusers' inpainting pipelines
    blend the known region into the latents each step when the UNet does not take the mask."""
    from diffusers import (
        StableDiffusionImg2ImgPipeline, StableDiffusionInpaintPipeline, StableDiffusionInstructPix2PixPipeline,
        StableDiffusionXLImg2ImgPipeline, StableDiffusionXLInpaintPipeline,
    )
    from diffusers.loaders.single_file_utils import infer_diffusers_model_type
    from transformers import CLIPTokenizer

    path = Path(source.location)  # resolve_source has refused a file that cannot serve `purpose`
    if path.suffix.lower() == ".safetensors":
        shapes: Any = {name: torch.empty(shape, device="meta") for name, shape in checkpoints.tensor_shapes(path).items()}
        state = None
    else:  # an allowed pickle file; weights_only refuses anything but tensors and plain containers
        checkpoints.check_archive_size(path)
        state = torch.load(str(path), map_location="cpu", weights_only=True)
        shapes = state.get("state_dict", state)
    model_type = infer_diffusers_model_type(shapes)
    has_ema = sum(name.startswith("model_ema.diffusion_model") for name in shapes) > 100
    shapes = state = None  # a pickle file's tensors: let them go before from_single_file reads the file again
    refused = checkpoints.refusal(path, purpose, checkpoints.KINDS.get(model_type, checkpoints.KINDS["unknown"]))
    if refused:  # a pickle file, whose kind is known only now
        raise ModelUnavailable(refused)
    config = checkpoints.config_folder(model_type)
    xl = model_type.startswith("xl_")
    cls = {
        "inpaint": StableDiffusionXLInpaintPipeline if xl else StableDiffusionInpaintPipeline,
        "img2img": StableDiffusionXLImg2ImgPipeline if xl else StableDiffusionImg2ImgPipeline,
        "instruct": StableDiffusionInstructPix2PixPipeline,
    }[purpose]
    vocab, merges = checkpoints.tokenizer_files()
    tokenizers = {}
    for name in ("tokenizer", "tokenizer_2"):
        if (config / name).is_dir():
            settings = json.loads((config / name / "tokenizer_config.json").read_text(encoding="utf-8"))
            settings.pop("tokenizer_class", None)
            tokenizers[name] = CLIPTokenizer(str(vocab), str(merges), **settings)
    extra: dict[str, Any] = {} if xl else {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}
    if has_ema:
        # The file carries the EMA copy of the UNet besides the trained one (instruct-pix2pix-00-22000 as
        # published): its authors sample with the EMA weights (use_ema in their generate.yaml), so take those.
        extra["extract_ema"] = True
    return cls.from_single_file(str(path), config=str(config), torch_dtype=dtype, local_files_only=True, **tokenizers, **extra)


# ---- schedulers -------------------------------------------------------------------------------

def torchvision_available() -> bool:
    """Whether torchvision imports. transformers 5 builds Qwen2VLProcessor only with a video
    processor, and Qwen2VLVideoProcessor needs torchvision."""
    try:
        import torchvision  # noqa: F401
    except Exception:  # a CUDA build of torchvision beside a CPU torch fails with RuntimeError
        return False
    return True


def image_only_processor_class():
    """Qwen2VLProcessor without its video processor, for environments without torchvision.

    transformers 5 refuses to construct (or load) a Qwen2VLProcessor whose video processor is missing,
    and Qwen2VLVideoProcessor needs torchvision; the Qwen-Image-Edit pipelines pass only text and
    pictures, so an image-only processor does all they ask of it."""
    from transformers import Qwen2VLProcessor
    from transformers.processing_utils import ProcessorMixin

    class ImageOnlyQwen2VLProcessor(Qwen2VLProcessor):
        def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
            self.image_token = getattr(tokenizer, "image_token", "<|image_pad|>")
            self.video_token = getattr(tokenizer, "video_token", "<|video_pad|>")
            self.image_token_id = getattr(tokenizer, "image_token_id", None) or tokenizer.convert_tokens_to_ids(self.image_token)
            self.video_token_id = getattr(tokenizer, "video_token_id", None) or tokenizer.convert_tokens_to_ids(self.video_token)
            ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template, **kwargs)

    return ImageOnlyQwen2VLProcessor


def load_qwen_vl_processor(folder: str | Path):
    """Load a Qwen-Image-Edit `processor/` folder (tokenizer files and preprocessor_config.json):
    `Qwen2VLProcessor.from_pretrained` with torchvision, the image-only processor without it. Pass
    the result to `from_pretrained(..., processor=...)` where torchvision is missing."""
    from transformers import AutoImageProcessor, Qwen2Tokenizer, Qwen2VLProcessor

    if torchvision_available():
        return Qwen2VLProcessor.from_pretrained(str(folder))
    return image_only_processor_class()(image_processor=AutoImageProcessor.from_pretrained(str(folder)),
                                        tokenizer=Qwen2Tokenizer.from_pretrained(str(folder)))


# ---- diffusion transformers: FLUX.2 [klein], Qwen-Image-Edit, FLUX.1 Fill and Kontext ----------
# Which kind a model is, and the pipeline each purpose runs it with, are in engines.kinds (no torch).


def dit_pipeline_class(kind: str, purpose: str, label: str) -> Any:
    """The diffusers class that runs a `kind` model for `purpose`; ModelUnavailable naming what it can do instead."""
    import diffusers

    name = kinds.DIT_PIPELINES[kind].get(purpose)
    if name is None:
        serves = {"inpaint": "inpainting and uncropping", "instruct": "instruction edits and colorizing"}
        can = " and ".join(serves[p] for p in kinds.DIT_PIPELINES[kind])
        raise ModelUnavailable(f"{label} is a {kinds.DIT_TITLES[kind]} model: it serves {can}, not {serves[purpose]}.")
    return getattr(diffusers, name)


def _load_dit(kind: str, purpose: str, source: ModelSource, dtype: torch.dtype, transformer: Any = None) -> Any:
    """A diffusers folder (or installed hub model) of `kind`, with `transformer` instead of its own when
    given; or a transformer file, with the other components from the kind's preset
    (engines.kinds.transformer_base)."""
    cls = dit_pipeline_class(kind, purpose, source.label)
    extra: dict[str, Any] = {"transformer": transformer} if transformer is not None else {}
    if source.kind == "file":
        location = str(kinds.transformer_base(kind, source.label))
    else:
        location = _local_location(source)
    try:
        if source.kind == "file":
            extra["transformer"] = load_transformer_file(kind, Path(source.location), dtype, Path(location))
        if kind == "qwen-edit" and not torchvision_available():
            extra["processor"] = load_qwen_vl_processor(Path(location) / "processor")
        pipe = cls.from_pretrained(location, torch_dtype=dtype, use_safetensors=True, local_files_only=True, **extra)
    except ModelUnavailable:
        raise
    except Exception as exc:  # a missing component or processor, a damaged file, a wrong config
        raise _unavailable(source, exc) from None
    pipe.set_progress_bar_config(disable=True)
    return pipe


TRANSFORMER_CLASSES = {"flux2-klein": "Flux2Transformer2DModel", "qwen-edit": "QwenImageTransformer2DModel",
                       "flux-fill": "FluxTransformer2DModel", "flux-kontext": "FluxTransformer2DModel"}


def transformer_config_folder(kind: str) -> Path:
    """The shipped configuration a `kind` transformer file is built with (tools/make_transformer_configs.py)."""
    return Path(str(importlib.resources.files("resources").joinpath("transformers", kind)))


def text_width(kind: str, base: Path) -> int | None:
    """The width of the text features the base's text encoder hands the transformer (its
    joint_attention_dim), from the encoder's config: FLUX.2 [klein] stacks three Qwen3 hidden layers;
    Qwen-Image-Edit reads Qwen2.5-VL's last one; FLUX.1 reads T5's. None when it cannot be read."""
    folder = base / ("text_encoder_2" if kind in ("flux-fill", "flux-kontext") else "text_encoder")
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if kind == "flux2-klein":
        return 3 * int(config["hidden_size"])
    if kind == "qwen-edit":  # transformers 5 keeps the language model's settings in text_config
        width = config.get("text_config", {}).get("hidden_size") or config.get("hidden_size")
        return int(width) if width else None
    return int(config["d_model"])


def load_transformer_file(kind: str, path: Path, dtype: torch.dtype, base: Path | None = None) -> Any:
    """A diffusion transformer from one .safetensors or .gguf file, offline.

    diffusers' `from_single_file` converts the original layout (Black Forest Labs' key names, ComfyUI's
    prefix) and, for GGUF, keeps the quantized weights as they are (GGUFQuantizationConfig: each layer
    dequantizes its weight to `dtype` as it runs). Without a `config` it would guess the model from the
    keys, and for these files it guesses wrong (FLUX.2 [dev] for a [klein] file, Stable Diffusion for
    Qwen-Image), and fetch that configuration from the hub; so the shipped configuration is given,
    with the file's own depth and widths. A file whose text width does not match the base's text
    encoder is refused here, before a step fails on mismatched shapes."""
    import diffusers
    from diffusers.loaders.single_file_utils import load_single_file_checkpoint

    shapes = checkpoints.tensor_shapes(path)
    model_type = checkpoints.model_type(shapes)
    config_folder = transformer_config_folder(kind)
    config = json.loads((config_folder / "transformer" / "config.json").read_text(encoding="utf-8"))
    structure = checkpoints.transformer_structure(model_type, shapes, int(config["attention_head_dim"]), int(config["patch_size"]))
    expected = text_width(kind, base) if base is not None else None
    if expected is not None and structure["joint_attention_dim"] != expected:
        title = kinds.base_preset(kind).title
        raise ModelUnavailable(f"{path.name} reads {structure['joint_attention_dim']}-wide text features, but {title}'s text encoder "
                               f"gives {expected}: it is another size of {kinds.DIT_TITLES[kind]} than the one Sandcastle runs.")
    if model_type == "qwen-image":
        structure["zero_cond_t"] = checkpoints.qwen_edit_2511(path.name, shapes)
        log.info("%s: Qwen-Image-Edit%s", path.name, "-2511 (zero_cond_t)" if structure["zero_cond_t"] else " before 2511")
    checkpoint = load_single_file_checkpoint(str(path), local_files_only=True)
    if any(name.startswith(checkpoints.COMFY_PREFIX) for name in checkpoint):
        # A whole-model file: only the transformer's tensors, without the prefix. diffusers' FLUX converters
        # strip it themselves; the Qwen-Image mapping is the identity and would not find the keys.
        checkpoint = {name[len(checkpoints.COMFY_PREFIX):]: value for name, value in checkpoint.items()
                      if name.startswith(checkpoints.COMFY_PREFIX)}
    checkpoint.pop(checkpoints.QWEN_2511_MARKER, None)  # a marker, not a weight (read above)
    quantized = path.suffix.lower() == ".gguf"
    quantization = diffusers.GGUFQuantizationConfig(compute_dtype=dtype) if quantized else None
    model_class = getattr(diffusers, TRANSFORMER_CLASSES[kind])
    return model_class.from_single_file(checkpoint, config=str(config_folder), subfolder="transformer", torch_dtype=dtype,
                                        quantization_config=quantization, local_files_only=True, **structure)


def _apply_dit_memory_mode(pipe: Any, mode: str, device: torch.device) -> None:
    """Diffusion transformers have no attention slicing; their memory modes move weights instead, as
    diffusers' memory guide sets them up: off keeps everything on the device; balanced is model CPU
    offload (one component on the GPU at a time: the 8-16 GB text encoder leaves before the
    transformer comes); quantized is model CPU offload too, with the 8-bit transformer already in
    place; lowest is group offloading (layers stream in as they run, on a CUDA stream that overlaps
    the copies with compute), which needs the least graphics memory and the most RAM."""
    if mode == "off" or (mode in ("balanced", "quantized") and device.type == "cpu"):
        pipe.to(device)
        return
    if mode in ("balanced", "quantized"):
        pipe.enable_model_cpu_offload(device=device)
        return
    from diffusers.hooks import apply_group_offloading

    stream = device.type == "cuda"
    for name in ("transformer", "text_encoder", "text_encoder_2", "vae"):
        module = getattr(pipe, name, None)
        if isinstance(module, torch.nn.Module):
            apply_group_offloading(module, onload_device=device, offload_device=torch.device("cpu"), offload_type="leaf_level",
                                   use_stream=stream)


SCHEDULERS = ("DDIM", "Euler ancestral", "DPM++ 2M", "DPM++ 2M Karras")


def make_scheduler(name: str, config: Any) -> Any:
    """A fresh scheduler of the named kind built from the model's own scheduler config."""
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler

    if name == "DDIM":
        return DDIMScheduler.from_config(config)
    if name == "Euler ancestral":
        return EulerAncestralDiscreteScheduler.from_config(config)
    if name == "DPM++ 2M":  # Karras sigmas off explicitly: `config` may be a previous "DPM++ 2M Karras" job's
        return DPMSolverMultistepScheduler.from_config(config, algorithm_type="dpmsolver++", solver_order=2, use_karras_sigmas=False)
    if name == "DPM++ 2M Karras":
        return DPMSolverMultistepScheduler.from_config(config, algorithm_type="dpmsolver++", solver_order=2, use_karras_sigmas=True)
    raise InputError(f"Unknown scheduler {name!r}; choose one of {', '.join(SCHEDULERS)}.")


def out_of_memory(device: torch.device, size: tuple[int, int]) -> OutOfMemory:
    """The error for a generation that ran out of memory at `size`, after handing the cached blocks back."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return OutOfMemory(f"The {device.type.upper()} ran out of memory generating at {size[0]}×{size[1]}: lower Generation size, or set "
                       "Low-memory mode to lowest in Settings.")


def is_out_of_memory(exc: BaseException) -> bool:
    oom = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError
    return isinstance(exc, oom) or (isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower())
