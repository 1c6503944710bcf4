"""The boundary between the editor and the engines: types, protocols, errors and pure validation.

The editor builds a `Request`, asks the engine to `check` it, and runs it on a worker thread with
an `on_step` callback and a `CancelToken`. Everything an engine needs travels in the request; an
engine never reaches back into the editor.

This module is the bottom layer of `engines`: it imports no other module of the package, so every
other module (and the editor) can depend on it. What the editor needs beyond this contract (picture
files, model status and downloads, own sliders, demo models) is in `engines.services`.
"""

from __future__ import annotations

import enum
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import numpy as np


class Task(str, enum.Enum):
    INPAINT = "inpaint"
    UNCROP = "uncrop"
    COLORIZE = "colorize"
    EDIT = "edit"
    ATTRIBUTES = "attributes"


# ---- errors: each carries one sentence that is shown to the person as-is ----------------------


class SandcastleError(Exception):
    """Base of every error an engine raises on purpose."""


class InputError(SandcastleError):
    """The request itself is wrong (empty mask, sizes differ, value out of range)."""


class ModelUnavailable(SandcastleError):
    """The model is not downloaded, the hub is unreachable, or a path is wrong. Says what to do."""


class OutOfMemory(SandcastleError):
    """The device ran out of memory. Says which setting to lower."""


class Cancelled(SandcastleError):
    """The person cancelled; any partial result has been discarded."""


# ---- parameters ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ParamSpec:
    """One engine parameter; the editor builds a control from it, the CLI a default."""

    name: str
    type: type  # int, float, bool or str
    default: Any
    label: str
    help: str = ""
    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None
    choices: tuple[str, ...] = ()
    special_value: str = ""  # shown instead of the minimum, when the minimum means "automatic"
    when: tuple[str, str] | None = None  # used only when another parameter has this value, e.g. ("method", "instruct")
    panel: bool = True  # False: the editor sets it from a control of its own (sliders, a square on the canvas), not a field

    def validate(self, value: Any) -> None:
        """Raise InputError with one sentence when `value` is not acceptable."""
        if self.choices:
            if value not in self.choices:
                raise InputError(f"{self.label} must be one of {', '.join(self.choices)}, not {value!r}.")
            return
        if self.type is bool:
            if not isinstance(value, (bool, np.bool_)):
                raise InputError(f"{self.label} must be on or off, not {value!r}.")
            return
        if self.type in (int, float):
            if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
                raise InputError(f"{self.label} must be a number, not {value!r}.")
            if not np.isfinite(float(value)):  # first: int() of inf or nan raises instead of answering
                raise InputError(f"{self.label} must be a finite number.")
            if self.type is int and float(value) != int(value):
                raise InputError(f"{self.label} must be a whole number, not {value!r}.")
            if self.minimum is not None and value < self.minimum:
                raise InputError(f"{self.label} must be at least {self.minimum:g}, not {value:g}.")
            if self.maximum is not None and value > self.maximum:
                raise InputError(f"{self.label} must be at most {self.maximum:g}, not {value:g}.")


@dataclass(frozen=True)
class EngineSpec:
    id: str
    tasks: tuple[Task, ...]
    params: tuple[ParamSpec, ...]
    default_model: str
    title: str = ""
    strength_when: tuple[str, str] | None = None  # the common strength applies only when this parameter has this value
    default_strength: float = 1.0  # what the strength control starts at for this engine
    common: tuple[str, ...] = ("prompt", "negative", "guidance", "strength", "steps", "seed")  # the shared controls it uses

    def param(self, name: str) -> ParamSpec:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)

    def defaults(self) -> dict[str, Any]:
        return {p.name: p.default for p in self.params}

    def values(self, params: dict[str, Any]) -> dict[str, Any]:
        """Every parameter's value for a request: the given `params` over the defaults."""
        return {**self.defaults(), **params}


# ---- one generation -------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """Everything one generation needs. Images are RGB uint8 (H, W, 3); masks uint8 (H, W), 255 = repaint."""

    task: Task
    image: np.ndarray
    mask: np.ndarray | None = None
    prompt: str = ""
    negative_prompt: str = ""
    guidance_scale: float = 7.5
    strength: float = 1.0
    steps: int = 25
    seed: int = 0
    model: str | None = None  # hub id, local diffusers folder or single .safetensors; None = engine default
    device: str | None = None  # "cuda", "mps", "cpu"; None = pick the best available
    dtype: str | None = None  # "float16", "bfloat16", "float32"; None = the device's usual choice
    memory: str | None = None  # low-memory mode "off", "balanced", "lowest" (FLUX and Qwen also "quantized"); None = chosen from free memory
    compile: bool = False  # torch.compile the UNet (static shapes: the working size snaps to a few buckets, each compiled on its first run)
    allow_pickle: tuple[str, ...] = ()  # pickle-based model files the person explicitly allowed
    params: dict[str, Any] = field(default_factory=dict)  # engine-specific, declared in its ParamSpecs
    hints: np.ndarray | None = None  # colorize: RGBA colour hints painted by the person (alpha = where)
    job_id: int = 0


@dataclass(frozen=True)
class StepPreview:
    """What the engine shows after each denoising step; its picture covers `box` = (x, y, w, h) of the result.

    The step callback runs on the denoising thread, which must do nothing per step beyond the model: so an
    engine hands over the preview-sized tensor inside `render` and makes no picture there. Whoever shows
    the step calls `picture()` (or `render()`) on a thread of its own, where the scaling, blending and
    colour conversion happen; `image` is for a picture that already exists."""

    job_id: int
    step: int  # 1-based
    total: int
    image: np.ndarray | None
    box: tuple[int, int, int, int]  # in the coordinates of the result picture
    seconds_per_step: float = 0.0
    pass_index: int = 1  # engines that generate in several passes (uncrop tiles) count them here
    passes: int = 1
    offset: tuple[int, int] = (0, 0)  # where the input's top-left corner lies in the result (uncrop)
    render: Callable[[], np.ndarray] | None = None  # makes the RGB uint8 picture of this step, off the denoising thread
    stage: str = ""  # before step 1: what takes time first (compiling), shown instead of the step count
    phase: str = ""  # for engines whose steps come in different kinds (DiffAE: encoding, then rendering): shown before the count

    def picture(self) -> np.ndarray | None:
        """The step's picture: `image`, else made now by `render`; None for steps without one."""
        if self.image is not None:
            return self.image
        return self.render() if self.render is not None else None


@dataclass(frozen=True)
class Result:
    image: np.ndarray  # full document size, RGB uint8
    box: tuple[int, int, int, int]  # the region that may differ from the input
    seconds: float = 0.0
    offset: tuple[int, int] = (0, 0)  # where the input's top-left corner lies in the result (uncrop grows the picture)
    info: dict[str, Any] = field(default_factory=dict)


class CancelToken:
    """A thread-safe flag. The GUI sets it; the engine checks it in its step callback."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise Cancelled("Cancelled.")


StepCallback = Callable[[StepPreview], None]


class Engine(Protocol):
    spec: EngineSpec

    def check(self, request: Request) -> None:
        """Raise InputError (or ModelUnavailable) before any heavy work."""

    def run(self, request: Request, on_step: StepCallback, cancel: CancelToken) -> Result:
        """Generate. Calls `on_step` once per denoising step and raises Cancelled within one step of a cancel."""


def default_model_for(engine: Engine, params: dict[str, Any]) -> str:
    """The model an engine uses when none is chosen; some engines choose by a parameter (edit: its method)."""
    choose = getattr(engine, "default_model_for", None)
    return choose(params) if choose is not None else engine.spec.default_model


def check_common(request: Request, spec: EngineSpec) -> None:
    """Checks every engine shares: image shape and type, the mask's when there is one, the common numeric
    ranges, declared params."""
    image = request.image
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise InputError("The image must be an RGB picture with 8 bits per channel.")
    if image.shape[0] < 8 or image.shape[1] < 8:
        raise InputError(f"The image is {image.shape[1]}×{image.shape[0]} pixels; it must be at least 8×8.")
    mask = request.mask
    if mask is not None:  # any engine that takes a mask needs it to fit the picture
        if not isinstance(mask, np.ndarray) or mask.dtype != np.uint8 or mask.ndim != 2:
            raise InputError("The mask must be a single-channel 8-bit picture.")
        if mask.shape != image.shape[:2]:
            raise InputError(
                f"The mask is {mask.shape[1]}×{mask.shape[0]} but the image is {image.shape[1]}×{image.shape[0]}; they must be the same size."
            )
    if not isinstance(request.prompt, str) or not isinstance(request.negative_prompt, str):
        raise InputError("The prompt must be text.")
    if not 1 <= request.steps <= 500:
        raise InputError(f"Steps must be between 1 and 500, not {request.steps}.")
    if not 0.0 <= request.guidance_scale <= 30.0:
        raise InputError(f"Guidance scale must be between 0 and 30, not {request.guidance_scale:g}.")
    if not 0.0 < request.strength <= 1.0:
        raise InputError(f"Strength must be above 0 and at most 1, not {request.strength:g}.")
    if not 0 <= request.seed < 2**63:
        raise InputError(f"The seed must be a whole number from 0 to 2^63−1, not {request.seed}.")
    known = {p.name for p in spec.params}
    for name, value in request.params.items():
        if name not in known:
            raise InputError(f"{spec.title or spec.id} has no setting called {name!r}.")
        spec.param(name).validate(value)


# ---- models: what the editor may know about one ----------------------------------------------


@dataclass(frozen=True)
class ModelControls:
    """How a model reads the panel's common controls: the panel shows a control only when the chosen
    model uses it, labelled with what it means to that model. The defaults are Stable Diffusion's."""

    guidance: tuple[str, str, float, float] | None = (
        "Guidance", "How strictly the result follows the prompt (classifier-free guidance scale).", 1.0, 20.0)  # label, help, min, max
    negative: bool = True  # reads a negative prompt
    scheduler: bool = True  # offers Sandcastle's schedulers (the transformers keep their own flow-matching one)
    steps_help: str = ""  # what the model was made for, when that matters


@dataclass(frozen=True)
class ModelStatus:
    name: str  # what the person chose: a preset id, hub id, folder or file
    kind: str  # "hub", "folder" or "file"
    location: str  # hub id or path
    installed: bool
    path: str | None  # where it is on disk, when installed
    disk_bytes: int
    title: str = ""
    licence: str = ""
    download_bytes: int = 0  # the preset's estimate, for models not yet downloaded
    components: tuple[str, ...] = ()
    tasks: tuple[str, ...] = ()  # for a single checkpoint file: the tasks its model type serves
    unusable: str = ""  # for a file Sandcastle cannot use: one sentence saying what it is and what to do instead
    access: str = ""  # for a gated hub model: what to do before it downloads (accept the licence, log in)
    base: str = ""  # for a transformer file: the hub model whose other components (`components`) it runs with
    without: tuple[str, ...] = ()  # for a hub model downloaded in part on purpose (for transformer files): the components left out

    @property
    def hub_to_fetch(self) -> str:
        """The hub model to download for this one to be ready: itself, or for a transformer file its preset."""
        return self.base or self.location
