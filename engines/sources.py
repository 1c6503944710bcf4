"""What a model name means, decided without loading anything (and without importing torch).

A model source is a preset id (resources/models.json), a Hugging Face hub id, a local diffusers
folder, or a single weights file. This module reads the presets, tells the kinds apart, refuses
bad paths and pickle-based files with a reason, knows whether Sandcastle is offline and says what
to do when a model is not there. `catalog` (what is installed, downloads) and `models` (loading)
build on it; the editor reaches it through `engines.services`.

Importing it also bounds the hub's time-outs, before anything imports huggingface_hub.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from engines import checkpoints
from engines.api import InputError, ModelUnavailable

# A hub call must never hang the app: bound the metadata and download timeouts (seconds)
# unless the person set their own. huggingface_hub reads these when it is first imported, so
# every module that may import it (catalog, models) imports this one first.
os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", "10")
os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", "30")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")
PICKLE_SUFFIXES = (".ckpt", ".bin", ".pt", ".pth")


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


# ---- presets ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Preset:
    id: str
    title: str
    tasks: tuple[str, ...]
    architecture: str  # the pipeline family the engines load it as: "sd15", "sdxl", "instruct-pix2pix", "flux2-klein", "flux-fill", …
    hub_id: str | None
    download_bytes: int
    licence: str
    description: str
    components: tuple[str, ...] = ()
    default_for: tuple[str, ...] = ()
    manual: str = ""
    gated: bool = False  # the hub gives its files only to a logged-in account that accepted the licence on the model's page

    @property
    def page(self) -> str:
        """The model's page on the hub, where a gated licence is accepted."""
        return hub_page(self.hub_id) if self.hub_id else ""

    def access_steps(self) -> str:
        """For a gated preset, what to do before downloading (one clause, no full stop); "" otherwise."""
        return access_steps(self.hub_id, self.licence) if self.gated and self.hub_id else ""


def presets() -> list[Preset]:
    data = json.loads(resources.files("resources").joinpath("models.json").read_text(encoding="utf-8"))
    return [
        Preset(
            id=p["id"], title=p["title"], tasks=tuple(p["tasks"]), architecture=p["architecture"], hub_id=p.get("hub_id"),
            download_bytes=int(p["download_bytes"]), licence=p["licence"], description=p["description"],
            components=tuple(p.get("components", ())), default_for=tuple(p.get("default_for", ())), manual=p.get("manual", ""),
            gated=bool(p.get("gated", False)),
        )
        for p in data["presets"]
    ]


def hub_page(hub_id: str) -> str:
    return f"https://huggingface.co/{hub_id}"


def access_steps(hub_id: str, licence: str = "") -> str:
    """What a person does once so that a gated repository downloads: accept its licence on its page while
    logged in there, then log in on this computer (huggingface_hub's `hf` command, or an access token)."""
    what = f"the {licence}" if licence else "its licence"
    return (f"accept {what} on its page, {hub_page(hub_id)}, while logged in there, then log in on this computer "
            "with `hf auth login` (or set HF_TOKEN to an access token)")


def preset_for_hub(hub_id: str) -> Preset | None:
    """The preset that downloads `hub_id`, if one does."""
    return next((p for p in presets() if p.hub_id == hub_id), None)


def preset(key: str) -> Preset:
    """A preset by its id or its hub id."""
    for p in presets():
        if key in (p.id, p.hub_id):
            return p
    raise InputError(f"There is no model preset called {key!r}.")


def default_preset(task: str) -> Preset:
    for p in presets():
        if task in p.default_for:
            return p
    raise InputError(f"No model is set up for {task}.")


# ---- sources ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSource:
    kind: str  # "hub", "folder" or "file"
    location: str

    @property
    def label(self) -> str:
        return self.location if self.kind == "hub" else Path(self.location).name


def resolve_source(model: str, allow_pickle: tuple[str, ...] = (), purpose: str | None = None) -> ModelSource:
    """Decide what `model` names, without loading anything. Raises ModelUnavailable for bad paths,
    and, given the pipeline `purpose`, for a single checkpoint file that cannot serve it.

    `model` is a preset id (see resources/models.json), a hub id, a diffusers folder or a single
    weights file (a Stable Diffusion checkpoint, or a diffusion transformer as .safetensors or .gguf). Pickle-based files (.ckpt, .bin, .pt) are refused unless their resolved path is in
    `allow_pickle` (an explicit per-file opt-in); they are then read with torch's weights_only mode.
    """
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise ModelUnavailable(f"{path} is a folder but not a diffusers model (it has no model_index.json).")
        code = sorted(p.relative_to(path).as_posix() for p in path.glob("*.py")) + sorted(p.relative_to(path).as_posix() for p in path.glob("*/*.py"))
        if code:  # custom pipeline or component code: diffusers would import it; Sandcastle runs no code from a model
            raise ModelUnavailable(f"{path.name} carries Python code ({', '.join(code[:3])}); Sandcastle never runs code from a model "
                                   "folder. Use a folder of configs and .safetensors weights only.")
        missing = missing_components(path)
        if missing:
            raise ModelUnavailable(missing)
        return ModelSource("folder", str(path))
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix in PICKLE_SUFFIXES:
            if str(path.resolve()) not in {str(Path(p).expanduser().resolve()) for p in allow_pickle}:
                raise ModelUnavailable(
                    f"{path.name} is a pickle-based checkpoint, which can run code when loaded; Sandcastle loads "
                    ".safetensors files only, unless you allow this one file in Models."
                )
            return ModelSource("file", str(path))
        if suffix not in checkpoints.WEIGHT_FILE_SUFFIXES:
            raise ModelUnavailable(f"{path.name} is not a model file Sandcastle can load (use a .safetensors or .gguf file, or a diffusers folder).")
        refused = checkpoints.refusal(path, purpose) if purpose else None
        if refused:
            raise ModelUnavailable(refused)
        return ModelSource("file", str(path))
    if "/" not in model and not model.startswith((".", "~")):
        for p in presets():
            if model == p.id and p.hub_id:
                return ModelSource("hub", p.hub_id)
    if HUB_ID.match(model) and not model.startswith((".", "/", "~")):
        return ModelSource("hub", model)
    raise ModelUnavailable(f"There is no model folder or file at {model}.")


# Components a pipeline runs without: downloads skip the safety checker and its image processor, and
# models.load_pipeline passes None for them. Any other component listed must be there.
OPTIONAL_COMPONENTS = frozenset({"safety_checker", "feature_extractor", "image_encoder"})


def missing_components(folder: Path) -> str | None:
    """One sentence when a diffusers folder's model_index.json is damaged or names a component whose
    subfolder is missing (a download cut short, a folder copied in part); None when it looks whole."""
    try:
        index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return f"{folder.name}/model_index.json is damaged (not readable JSON); download or copy the model again."
    if not isinstance(index, dict):
        return f"{folder.name}/model_index.json is damaged (not a JSON object); download or copy the model again."
    absent = [name for name, entry in index.items()
              if not name.startswith("_") and name not in OPTIONAL_COMPONENTS and isinstance(entry, list) and entry and entry[0] is not None and not (folder / name).is_dir()]
    if absent:
        return (f"{folder.name} is incomplete: model_index.json names {', '.join(absent)} but the folder has no "
                f"{'subfolder' if len(absent) == 1 else 'subfolders'} of that name; download or copy the model again.")
    return None


def unavailable_message(source: ModelSource, reason: str = "") -> str:
    if source.kind == "hub":
        if offline():
            return (
                f"The model {source.location} is not on this computer and Sandcastle is offline (HF_HUB_OFFLINE is set). "
                f"On a connected machine run: hf download {source.location}, then copy its Hugging Face "
                "cache folder (~/.cache/huggingface) here, or choose a local copy in Models (or --model /path/to/folder)."
            )
        return (
            f"The model {source.location} is not downloaded yet: download it in Models (Generate offers to), "
            "or choose a local copy there (or --model /path/to/folder)."
        )
    return f"The model at {source.location} could not be loaded: {reason}"
