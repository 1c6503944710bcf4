"""What the editor and the command line need from the engines beyond the contract in `engines.api`.

Picture and mask files, the model presets and where each model is, downloads, the person's own
attribute sliders and their data folder, the device line for the status bar, and the tiny demo
models. The editor may import `engines.api`, `engines.registry` and this module, nothing else of
`engines` (pyproject.toml's import contracts hold that).

The editor calls most of these on the GUI thread before any engine is loaded, so importing this
module and calling them imports no torch, diffusers or transformers (tests/unit/test_boundaries.py
checks it). Only `device_summary`, `demo_model` and `download_model` may, and they import what they
need when called.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from engines import catalog, checkpoints, folders, imaging, kinds, remote, sources, wire
from engines.api import CancelToken, Engine, InputError, ModelControls, ModelStatus, ModelUnavailable
from engines.diffae import directions

# ---- files: the editor reads and writes pictures through these, not through engine internals ---


def load_image(path: str) -> np.ndarray:
    """RGB uint8 from any picture file; raises InputError with a plain reason."""
    return imaging.load_image(path)


def picture_size(path: str) -> tuple[int, int] | None:
    """(width, height) from the file's header without decoding it; None when it is not a readable picture."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.size
    except Exception:
        return None


# What read_picture returns: image (RGB uint8, sRGB), alpha (None when opaque) and colour, the file's
# own colours (None for sRGB, untagged, CMYK and greyscale files), to give back to save_image.
Picture = imaging.Picture
ColourSource = imaging.ColourSource


def read_picture(path: str, max_pixels: int = imaging.MAX_PIXELS) -> Picture:
    """A picture file as (image, alpha, colour), refusing pictures above `max_pixels`. Everything works on
    `image`, an sRGB view; `colour` lets save_image write the file's own values back wherever nothing
    changed, with its profile. After uncrop, pass `colour.moved(result.offset)`."""
    return imaging.read_picture(path, max_pixels)


def load_picture(path: str, max_pixels: int) -> tuple[np.ndarray, np.ndarray | None]:
    """RGB uint8 and its alpha channel (None when opaque), in sRGB, refusing pictures above `max_pixels`
    (read_picture also gives the file's own colours)."""
    return imaging.load_picture(path, max_pixels)


def load_mask(path: str, size: tuple[int, int]) -> np.ndarray:
    """A mask file (white = repaint) that must match `size` = (width, height)."""
    return imaging.load_mask(path, size)


def save_mask(path: str, mask: np.ndarray) -> None:
    """A mask as a greyscale PNG (white = repaint), written atomically."""
    imaging.save_image(path, mask)


def save_image(path: str, image: np.ndarray, alpha: np.ndarray | None = None, colour: ColourSource | None = None) -> None:
    """PNG, JPEG or WebP by the file's ending, written atomically and synced; `alpha` is kept where the
    format can; with `colour` (read_picture's), in the file's own colour space with its profile. A missing
    or read-only folder, a read-only file or a full disk raise InputError saying what to do."""
    imaging.save_image(path, image, alpha=alpha, colour=colour)


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Remove the `.sandcastle-<pid>-…` temporaries that killed saves left in `folder` (never one a running
    save is writing) and return them. Every save does this for its own folder."""
    return imaging.remove_stale_temporaries(folder)


def grow_mask(mask: np.ndarray, pixels: int) -> np.ndarray:
    """The mask grown by `pixels` (shrunk when negative), 0/255."""
    return imaging.grow_mask(mask, pixels)


def embed(layer: np.ndarray, size: tuple[int, int], offset: tuple[int, int], fill: int) -> np.ndarray:
    """`layer` at `offset` = (left, top) in a new (height, width) array filled with `fill` elsewhere (uncrop)."""
    return imaging.embed(layer, size, offset, fill)


def fill_mask_region(mask: np.ndarray, x: int, y: int, value: int) -> np.ndarray:
    """The mask with the connected area around (x, y) set to `value` (a bucket fill)."""
    return imaging.fill_region(mask, x, y, value)


# ---- models: what the editor may know and do about them ------------------------------------------


def model_presets() -> list[sources.Preset]:
    """The presets of resources/models.json."""
    return sources.presets()


def model_controls(model: str, allow_pickle: tuple[str, ...] = ()) -> ModelControls:
    """Which of the panel's common controls `model` uses, and what its guidance means (no torch)."""
    return kinds.controls_for(model, allow_pickle)


def default_model(task: str) -> str:
    """The preset id used for `task` when the person chose nothing."""
    return sources.default_preset(task).id


def model_status(name: str, allow_pickle: tuple[str, ...] = ()) -> ModelStatus:
    """Where a model is and whether it is ready to load. Raises ModelUnavailable for bad paths."""
    folder = Path(name).expanduser()
    if (folder / "autoencoder.safetensors").is_file():  # a DiffAE folder made with convert-diffae
        return ModelStatus(name, "folder", str(folder), True, str(folder), catalog.disk_bytes(folder), folder.name)
    source = sources.resolve_source(name, allow_pickle)
    preset = next((p for p in sources.presets() if source.location in (p.hub_id, p.id)), None)
    if source.kind == "hub":
        path = catalog.installed_path(source.location)
        part = catalog.installed_without(source.location, "transformer") if path is None else None
        return ModelStatus(name, "hub", source.location, path is not None, str(path or part or "") or None, catalog.disk_bytes(path or part),
                           preset.title if preset else source.location, preset.licence if preset else "",
                           preset.download_bytes if preset else 0, preset.components if preset else (),
                           access=preset.access_steps() if preset else "", without=("transformer",) if part else ())
    path = Path(source.location)
    if source.kind == "file" and path.suffix.lower() in checkpoints.WEIGHT_FILE_SUFFIXES:
        kind = checkpoints.describe(path)
        title = f"{path.name} ({kind.title})"
        if kind.transformer:  # it runs with its preset's text encoder and VAE, downloaded without the preset's transformer
            base = kinds.base_preset(kind.transformer)
            try:
                kinds.transformer_base(kind.transformer, path.name)
                missing = ""
            except ModelUnavailable as exc:
                missing = str(exc)
            return ModelStatus(name, "file", source.location, not missing, str(path), catalog.disk_bytes(path), title, base.licence,
                               components=tuple(c for c in base.components if c != "transformer"), tasks=kind.tasks, unusable=missing,
                               access=base.access_steps(), base=base.hub_id or "")
        unusable = "" if kind.usable else checkpoints.refusal(path, "inpaint", kind) or ""
        return ModelStatus(name, "file", source.location, kind.usable, str(path), catalog.disk_bytes(path), title, tasks=kind.tasks,
                           unusable=unusable)
    return ModelStatus(name, source.kind, source.location, True, str(path), catalog.disk_bytes(path), path.name)


def download_model(hub_id: str, components: tuple[str, ...], on_progress, cancel: CancelToken, endpoint: str | None = None) -> str:
    """Download a hub model with byte progress; Cancelled leaves a partial file that the next call resumes."""
    return str(catalog.download(hub_id, components, on_progress, cancel, endpoint or None))


def delete_model(hub_id: str) -> int:
    return catalog.delete(hub_id)


def is_offline() -> bool:
    return sources.offline()


def device_summary(device: str | None = None, dtype: str | None = None) -> str:
    """One line for the status bar: the device, its precision and, on a GPU, the memory in use. Imports torch."""
    from engines import models

    try:
        dev = models.pick_device(device)
        precision = str(models.pick_dtype(dev, dtype)).replace("torch.", "")
    except InputError as exc:
        return str(exc)
    if dev.type == "cuda":
        import torch

        used = torch.cuda.memory_allocated(dev) / 1024**3
        total = torch.cuda.get_device_properties(dev).total_memory / 1024**3
        return f"{torch.cuda.get_device_name(dev)} · {precision} · {used:.1f}/{total:.0f} GB"
    return f"{dev.type.upper()} · {precision}"


# ---- demo mode: tiny random-weight models, built on first use ------------------------------------


def demo_model(task: str, params: dict[str, Any] | None = None) -> str:
    """The folder of a tiny random-weight model for `task` (and, for edits, the chosen method), in
    the user cache folder; written on first use (which imports torch). Everything runs for real; the
    pictures are noise."""
    import shutil

    kind = {"inpaint": "inpaint", "uncrop": "inpaint", "colorize": "img2img"}.get(task)
    if task == "edit":
        kind = "img2img" if (params or {}).get("method") == "img2img" else "instruct"
    if task == "attributes":
        kind = "diffae"
    if kind is None:
        raise InputError(f"There is no demo model for {task} yet.")
    folder = folders.cache_folder() / "demo-models" / kind
    if not ((folder / "model_index.json").is_file() or (folder / "autoencoder.safetensors").is_file()):
        from engines.testing import write_diffae, write_model

        partial = folder.with_name(folder.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        write_diffae(partial) if kind == "diffae" else write_model(partial, kind)
        shutil.rmtree(folder, ignore_errors=True)
        partial.rename(folder)
    return str(folder)


# ---- the person's own data ---------------------------------------------------------------------


def log_folder() -> Path:
    """Where the window and the command line write their logs."""
    return folders.log_folder()


def user_data_folder() -> Path:
    """Sandcastle's folder in the platform's user data location (own sliders, autosave)."""
    return folders.user_data_folder()


def own_sliders(folder: str = "") -> tuple[str, ...]:
    """The names of the person's own attribute sliders (empty `folder`: the data folder's), read from the
    files' headers."""
    return directions.slider_names(folders.own_sliders_folder({"directions_folder": folder}))


def delete_own_slider(name: str, folder: str = "") -> None:
    directions.delete_direction(folders.own_sliders_folder({"directions_folder": folder}), name)


# ---- Sandcastle's server (`sandcastle serve`): a remote device -----------------------------------

# What a remote job raises besides the contract's errors, all SandcastleErrors with one sentence:
RemoteError = wire.RemoteError  # the server or the connection failed
TokenRefused = wire.TokenRefused  # "The server refused the token…"
ConnectionLost = wire.ConnectionLost  # the connection broke or the server fell silent during a job
ServerUnavailable = wire.ServerUnavailable  # nothing answered at that address (also a ModelUnavailable)


def remote_engine(task: str, url: str, token: str = "") -> Engine:
    """The engine for `task` on Sandcastle's server at `url`, used like a local one (check, run with
    previews and cancel). Asks the server for the engine's spec, so it blocks for up to a few seconds:
    call it off the GUI thread. Raises ServerUnavailable ("Sandcastle's server at URL did not answer…"),
    TokenRefused, or InputError when the server has no engine for the task."""
    return remote.remote_engine(task, url, token)


def remote_models(url: str, token: str = "") -> list[dict[str, Any]]:
    """The models the server at `url` offers, each {"name", "title", "tasks", "installed", "licence", "about"};
    a Request's model for that server is one of these names, or a hub id (the server downloads a model
    it has no copy of on first use, unless it runs offline or with --no-downloads). Blocks: call it off
    the GUI thread. Raises ServerUnavailable or TokenRefused like remote_engine."""
    return remote.models(url, token)


def remote_status(url: str, token: str = "") -> str:
    """One line for the status bar, e.g. "Remote: 1 × NVIDIA H200 at http://…"; never raises (when the
    server cannot be asked, the line says why)."""
    return remote.status(url, token)


def model_tasks(name: str, allow_pickle: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The tasks a model can serve, read from its files or its preset without loading it (no torch);
    () when that cannot be told. The server lists its models with these."""
    folder = Path(name).expanduser()
    if (folder / "autoencoder.safetensors").is_file():
        return ("attributes",)
    preset = next((p for p in sources.presets() if name in (p.id, p.hub_id)), None)
    if preset is not None:
        return preset.tasks
    try:
        source = sources.resolve_source(name, allow_pickle)
    except (InputError, ModelUnavailable):
        return ()
    if source.kind == "file":
        path = Path(source.location)
        return checkpoints.describe(path).tasks if path.suffix.lower() in checkpoints.WEIGHT_FILE_SUFFIXES else ()
    dit = kinds.dit_kind(name, allow_pickle)
    if dit is not None:
        purposes = kinds.DIT_PIPELINES[dit]
        return (("inpaint", "uncrop") if "inpaint" in purposes else ()) + (("edit", "colorize") if "instruct" in purposes else ())
    location = Path(source.location) if source.kind == "folder" else catalog.installed_path(source.location)
    if location is None:
        return ()
    try:
        import json

        channels = json.loads((Path(location) / "unet" / "config.json").read_text(encoding="utf-8")).get("in_channels")
    except (OSError, ValueError, AttributeError):
        return ()
    return {9: ("inpaint", "uncrop"), 8: ("edit",), 4: ("inpaint", "uncrop", "edit", "colorize")}.get(channels, ())
