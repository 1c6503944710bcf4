"""Settings (JSON with a schema version, in the platformdirs config folder) and logging (rotating
files in the platformdirs log folder). No Qt here: both are plain files."""

from __future__ import annotations

import copy
import json
import logging
import logging.handlers
import math
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import platformdirs

from engines.services import log_folder as services_log_folder

APP = "sandcastle"
SCHEMA = 2
log = logging.getLogger(__name__)

DEFAULTS: dict[str, Any] = {
    "schema": SCHEMA,
    "device": "auto",  # auto, cuda, mps, cpu, or remote (a Sandcastle server: remote_url)
    "precision": "auto",  # auto, float16, bfloat16, float32
    "memory": "auto",  # low-memory mode: auto, off, balanced, lowest
    "task_models": {},  # task → preset id, hub id, or a local folder / .safetensors file
    "local_models": [],  # [{"path", "architecture", "title"}] added by the person
    "pickle_allowed": [],  # pickle-based files the person explicitly allowed, loaded with weights_only
    "asked_downloads": [],  # hub ids whose size and licence the person has already agreed to ("<id> without transformer": its text encoder and VAE only)
    "hub_endpoint": "",  # a hub mirror; empty = huggingface.co
    "mask_colour": "#ff2850",  # the mask overlay
    "mask_opacity": 0.5,
    "hint_opacity": 0.8,  # the colour hints over the picture
    "recent_files": [],  # most recent first
    "max_megapixels": 120,  # pictures above this many million pixels are refused (a 12000×10000 scan fits)
    "autosave_seconds": 60,
    "remote_url": "",  # the Sandcastle server (`sandcastle serve`) used when device is remote
    "remote_token": "",  # the token that server was started with, if any
    "remote_task_models": {},  # task → a model name the server lists: the server's names are not this computer's
    "compile_unet": False,  # torch.compile the UNet: faster steps on a graphics card after a slow first run  # 0 turns the periodic autosave off (it still happens on exit)
}

CHOICES = {
    "device": ("auto", "cuda", "mps", "cpu", "remote"),
    "precision": ("auto", "float16", "bfloat16", "float32"),
    "memory": ("auto", "off", "balanced", "lowest"),
}


def config_path() -> Path:
    return Path(platformdirs.user_config_dir(APP)) / "settings.json"


def log_folder() -> Path:
    return services_log_folder()  # one place for the window's log and the command line's


def migrate(data: dict[str, Any]) -> dict[str, Any]:
    """Bring settings of any earlier schema up to the current one.

    Schema 1 (the first drafts) had `version: 1`, one `model` for everything, `fp16` and `low_vram`
    flags; schema 2 chooses a model per task, a precision and a low-memory mode.
    """
    data = copy.deepcopy(data)
    schema = data.pop("schema", data.pop("version", 1))
    if schema == 1:
        model = data.pop("model", None)
        if model:
            data.setdefault("task_models", {})["inpaint"] = model
        if data.pop("fp16", False):
            data["precision"] = "float16"
        if data.pop("low_vram", False):
            data["memory"] = "lowest"
        schema = 2
    if schema != SCHEMA:
        raise ValueError(f"settings schema {schema} is newer than this Sandcastle understands ({SCHEMA})")
    merged = copy.deepcopy(DEFAULTS)
    merged.update({k: v for k, v in data.items() if k in DEFAULTS})
    merged["schema"] = SCHEMA
    return merged


def _strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def _number(low: float, high: float, whole: bool = False):
    def check(value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not low <= value <= high:
            return False
        return not whole or float(value).is_integer()
    return check


# What each setting may hold: a file edited by hand (or by an older or broken build) is checked key by
# key, so one wrong value costs that value, never the app.
VALID = {
    "schema": lambda v: v == SCHEMA,
    "device": lambda v: v in CHOICES["device"],
    "precision": lambda v: v in CHOICES["precision"],
    "memory": lambda v: v in CHOICES["memory"],
    "task_models": lambda v: isinstance(v, dict) and all(isinstance(k, str) and isinstance(m, str) for k, m in v.items()),
    "local_models": lambda v: isinstance(v, list) and all(isinstance(m, dict) and isinstance(m.get("path"), str)
                                                         and isinstance(m.get("title", ""), str) for m in v),
    "pickle_allowed": _strings,
    "asked_downloads": _strings,
    "hub_endpoint": lambda v: isinstance(v, str) and (v == "" or v.startswith(("http://", "https://"))),
    "mask_colour": lambda v: isinstance(v, str) and re.fullmatch(r"#[0-9a-fA-F]{6}", v) is not None,
    "mask_opacity": _number(0.05, 1.0),
    "hint_opacity": _number(0.05, 1.0),
    "recent_files": _strings,
    "max_megapixels": _number(1, 10_000),
    "autosave_seconds": _number(0, 86_400, whole=True),
    "compile_unet": lambda v: isinstance(v, bool),
    "remote_url": lambda v: isinstance(v, str) and (v == "" or v.startswith(("http://", "https://"))),
    "remote_token": lambda v: isinstance(v, str) and len(v) <= 4096 and v.isprintable(),
    "remote_task_models": lambda v: isinstance(v, dict) and all(isinstance(k, str) and isinstance(m, str) for k, m in v.items()),
}


def checked(data: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The settings with every value that is not valid replaced by its default, and those keys."""
    rejected = [key for key, valid in VALID.items() if not valid(data[key])]
    for key in rejected:
        data[key] = copy.deepcopy(DEFAULTS[key])
    return data, rejected


class Settings:
    """The person's settings; `save` writes them atomically."""

    def __init__(self, data: dict[str, Any] | None = None, path: Path | None = None) -> None:
        self.data, self.rejected = checked(migrate(data)) if data is not None else (copy.deepcopy(DEFAULTS), [])
        self.path = path
        self.notice = ""  # one line for the window when the file had to be mended

    @classmethod
    def load(cls, path: Path | None = None) -> "Settings":
        """Read settings; a missing file gives the defaults, an unreadable one is kept aside as
        settings.json.broken-<time> and the defaults are used, so a bad file never stops the app."""
        path = path or config_path()
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(raw, dict):
                raise ValueError("not a JSON object")
            settings = cls(raw, path)
            if settings.rejected:  # keep the person's file once, then write the mended one so this is said once
                aside = path.with_name(f"{path.name}.invalid-{int(time.time())}")
                shutil.copyfile(path, aside)
                settings.save()
                settings.notice = (f"Some settings were not valid and are back to their defaults: {', '.join(settings.rejected)} "
                                   f"(your file is kept as {aside.name}).")
                log.warning(settings.notice)
            return settings
        except FileNotFoundError:
            return cls(None, path)
        except (ValueError, OSError) as exc:
            aside = path.with_name(f"{path.name}.broken-{int(time.time())}")
            log.warning("settings file %s could not be used (%s); kept as %s, using defaults", path, exc, aside.name)
            try:
                path.replace(aside)
            except OSError:
                pass
            return cls(None, path)

    def save(self) -> None:
        path = self.path or config_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".settings-", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(self.data, f, indent=2)  # ASCII escapes: a file name that is not UTF-8 survives the round trip
        os.replace(tmp, path)

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def __setitem__(self, key: str, value: Any) -> None:
        if key not in DEFAULTS:
            raise KeyError(key)
        if key in CHOICES and value not in CHOICES[key]:
            raise ValueError(f"{key} must be one of {CHOICES[key]}")
        self.data[key] = value

    def _task_models(self) -> dict[str, str]:
        """The per-task choices of where the engines run: this computer's, or the server's (whose names differ)."""
        return self.data["remote_task_models" if self.remote else "task_models"]

    def model_for(self, task: str) -> str | None:
        return self._task_models().get(task)

    def set_model_for(self, task: str, model: str | None) -> None:
        if model:
            self._task_models()[task] = model
        else:
            self._task_models().pop(task, None)

    def resolved(self, key: str) -> str | None:
        """A device/precision/memory choice for the engines: None where it is "auto" (and, for a remote
        server, where the server decides)."""
        value = self.data[key]
        return None if value == "auto" or self.remote else value

    @property
    def remote(self) -> str:
        """The server's address when the engines run there (Device: remote), else ""."""
        return self.data["remote_url"] if self.data["device"] == "remote" else ""


def setup_logging(folder: Path | None = None, level: int = logging.INFO) -> Path:
    """Log to a rotating file (1 MB × 5) in the log folder and to stderr. Returns the file's path."""
    folder = folder or log_folder()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "sandcastle.log"
    root = logging.getLogger()
    if not any(isinstance(h, logging.handlers.RotatingFileHandler) and Path(h.baseFilename) == path for h in root.handlers):
        handler = logging.handlers.RotatingFileHandler(path, maxBytes=1_000_000, backupCount=5, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(threadName)s %(name)s: %(message)s"))
        root.addHandler(handler)
    if not any(type(h) is logging.StreamHandler for h in root.handlers):
        root.addHandler(logging.StreamHandler())
    root.setLevel(level)
    return path
