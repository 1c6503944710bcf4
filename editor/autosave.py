"""Autosave: the open work (picture, mask, hints, panel settings, versions not yet chosen) written as
PNG files and one JSON file to the platformdirs data folder, periodically and on exit. Never pickle.

Each running window owns one folder, `autosave/session-<id>`, held by a QLockFile while it runs. At
start, a folder whose lock is free (its owner ended) and whose JSON does not say `clean_exit` was
left by a crash: the window offers to restore it. A lock held by another running Sandcastle is
left alone, so two windows never take each other's work.

A snapshot is written to a fresh folder and then renamed over the old one, so a crash mid-write
leaves the previous snapshot whole. What is read back is checked: file names must be plain names
of PNG files inside the session folder, sizes must agree, numbers must be numbers.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from PySide6.QtCore import QLockFile

from engines.services import ColourSource, user_data_folder

log = logging.getLogger(__name__)
FORMAT = 1
SESSION_JSON = "session.json"
PLAIN_PNG = re.compile(r"[a-z0-9-]{1,40}\.png")


@dataclass
class Snapshot:
    image: np.ndarray  # RGB uint8
    mask: np.ndarray  # uint8
    hints: np.ndarray | None  # RGBA uint8, or None when empty
    alpha: np.ndarray | None  # the picture's own transparency, when it had one
    panel: dict[str, Any]
    source_path: str | None
    versions: list[dict[str, Any]] = field(default_factory=list)  # {"image", "box", "offset", "seed"}: versions not yet chosen
    colour: ColourSource | None = None  # the file's own colours (profile and pixels), so a restored picture still saves in them


def autosave_root() -> Path:
    return user_data_folder() / "autosave"


def write_snapshot(folder: Path, snap: Snapshot, clean_exit: bool) -> None:
    """Write `snap` as `folder` (replacing what was there) through a fresh sibling folder."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    fresh = folder.with_name(f".{folder.name}-{uuid.uuid4().hex[:8]}")
    fresh.mkdir()
    try:
        files = {"image": "image.png", "mask": "mask.png"}
        _png(snap.image, fresh / "image.png")
        _png(snap.mask, fresh / "mask.png")
        if snap.hints is not None:
            files["hints"] = "hints.png"
            _png(snap.hints, fresh / "hints.png")
        if snap.alpha is not None:
            files["alpha"] = "alpha.png"
            _png(snap.alpha, fresh / "alpha.png")
        colour = None
        if snap.colour is not None:
            files["colour"] = "colour.png"
            _png(snap.colour.pixels, fresh / "colour.png")
            (fresh / "colour.icc").write_bytes(snap.colour.profile)
            colour = {"offset": list(snap.colour.offset), "description": snap.colour.description}
        versions = []
        for i, c in enumerate(snap.versions):
            name = f"version-{i}.png"
            _png(c["image"], fresh / name)
            versions.append({"file": name, "box": list(c["box"]), "offset": list(c["offset"]), "seed": int(c["seed"])})
        meta = {"format": FORMAT, "saved_at": time.time(), "clean_exit": clean_exit, "source_path": snap.source_path,
                "files": files, "panel": snap.panel, "versions": versions, "colour": colour}
        (fresh / SESSION_JSON).write_text(json.dumps(meta, indent=1), encoding="utf-8")  # ASCII escapes keep non-UTF-8 names
        old = folder.with_name(f".{folder.name}-old-{uuid.uuid4().hex[:8]}")
        if folder.exists():
            folder.rename(old)  # the lock file stays with the session: it lives beside the folder, not in it
        fresh.rename(folder)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(fresh, ignore_errors=True)
        raise


def _png(array: np.ndarray, path: Path) -> None:
    Image.fromarray(np.ascontiguousarray(array)).save(path, "PNG", compress_level=1)  # fast: autosave must not hold anything up


class RestoreError(Exception):
    pass


def read_snapshot(folder: Path, max_pixels: int) -> Snapshot:
    """The snapshot in `folder`; RestoreError with one sentence when it is damaged or unsafe."""
    try:
        meta = json.loads((folder / SESSION_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RestoreError(f"The autosaved session could not be read ({exc}).") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or not isinstance(meta.get("files"), dict):
        raise RestoreError("The autosaved session is in a format this Sandcastle does not know.")

    def load(name: Any, mode: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
        if not isinstance(name, str) or not PLAIN_PNG.fullmatch(name):  # no paths: only files of this session
            raise RestoreError(f"The autosaved session names a file it may not use ({str(name)[:60]!r}).")
        path = folder / name
        try:
            with Image.open(path) as im:
                if im.format != "PNG" or im.width * im.height > max_pixels:
                    raise RestoreError(f"The autosaved file {name} is not a PNG of an allowed size.")
                array = np.array(im.convert(mode))
        except (OSError, Image.DecompressionBombError) as exc:
            raise RestoreError(f"The autosaved file {name} could not be read ({exc}).") from None
        if shape is not None and array.shape[:2] != shape:
            raise RestoreError(f"The autosaved file {name} does not match the picture's size.")
        return array

    files = meta["files"]
    image = load(files.get("image"), "RGB")
    size = image.shape[:2]
    mask = load(files.get("mask"), "L", size)
    hints = load(files["hints"], "RGBA", size) if "hints" in files else None
    alpha = load(files["alpha"], "L", size) if "alpha" in files else None
    versions = []
    for c in meta.get("versions") or meta.get("candidates") or []:  # "candidates": what the first autosaves called them
        if not isinstance(c, dict) or not _ints(c.get("box"), 4) or not _ints(c.get("offset"), 2) or not _ints([c.get("seed")], 1):
            raise RestoreError("The autosaved versions are damaged.")
        versions.append({"image": load(c.get("file"), "RGB"), "box": tuple(c["box"]), "offset": tuple(c["offset"]), "seed": c["seed"]})
    panel = meta.get("panel") if isinstance(meta.get("panel"), dict) else {}
    source = meta.get("source_path") if isinstance(meta.get("source_path"), str) else None
    return Snapshot(image, mask, hints, alpha, panel, source, versions, _colour(folder, meta, files, load))


def _colour(folder: Path, meta: dict, files: dict, load) -> ColourSource | None:
    """The file's own colours when the snapshot kept them; None (the picture saves as sRGB) when they
    are missing or damaged, which loses the profile but never the picture."""
    about = meta.get("colour")
    if "colour" not in files or not isinstance(about, dict) or not _ints(about.get("offset"), 2):
        return None
    try:
        profile = (folder / "colour.icc").read_bytes()
        pixels = load(files["colour"], "RGB")
    except (OSError, RestoreError) as exc:
        log.warning("the autosaved colour profile was not restored: %s", exc)
        return None
    return ColourSource(profile=profile, pixels=pixels, description=str(about.get("description", "")), offset=tuple(about["offset"]))


def _ints(values: Any, n: int) -> bool:
    return isinstance(values, list) and len(values) == n and all(isinstance(v, int) and not isinstance(v, bool) for v in values)


class Autosaver:
    """This window's session folder: its lock, background writes, and the final write on exit."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root or autosave_root()
        self.root.mkdir(parents=True, exist_ok=True)
        self.folder = self.root / f"session-{uuid.uuid4().hex[:12]}"
        self.lock = _lock_for(self.folder)
        self.lock.tryLock(0)
        self._thread: threading.Thread | None = None
        self.last_error = ""

    def save_in_background(self, snap: Snapshot) -> bool:
        """Write `snap` on a plain thread (PNG compression of a big picture takes a while). False when
        the previous write is still going (the next tick catches up)."""
        if self._thread is not None and self._thread.is_alive():
            return False
        self._thread = threading.Thread(target=self._write, args=(snap, False), name="sandcastle-autosave", daemon=True)
        self._thread.start()
        return True

    def save_now(self, snap: Snapshot, clean_exit: bool = False) -> None:
        self.wait()
        self._write(snap, clean_exit)

    def _write(self, snap: Snapshot, clean_exit: bool) -> None:
        try:
            write_snapshot(self.folder, snap, clean_exit)
            self.last_error = ""
        except OSError as exc:  # a full disk must not take the editor down; the window says so
            self.last_error = str(exc)
            log.warning("autosave failed: %s", exc)

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()

    def finish(self, snap: Snapshot | None) -> None:
        """On exit: the last snapshot, marked as a clean exit (or nothing to keep), then let go of the lock."""
        if snap is not None:
            self.save_now(snap, clean_exit=True)
        else:
            self.wait()
            shutil.rmtree(self.folder, ignore_errors=True)
        self.lock.unlock()
        self.prune_clean()

    def prune_clean(self, keep: int = 1) -> None:
        """Keep only the newest `keep` cleanly ended sessions (the others were closed on purpose)."""
        ended = []
        for folder in self.root.glob("session-*"):
            if folder.is_dir() and folder != self.folder and _meta(folder).get("clean_exit") is True and _unlocked(folder):
                ended.append(folder)
        for folder in sorted(ended, key=lambda f: _meta(f).get("saved_at", 0), reverse=True)[keep:]:
            shutil.rmtree(folder, ignore_errors=True)

    def crashed_sessions(self) -> list[Path]:
        """Sessions whose window ended without a clean exit and that no running Sandcastle holds, newest first."""
        found = []
        for folder in self.root.glob("session-*"):
            if folder.is_dir() and folder != self.folder and (folder / SESSION_JSON).is_file() \
                    and _meta(folder).get("clean_exit") is not True and _unlocked(folder):
                found.append(folder)
        return sorted(found, key=lambda f: _meta(f).get("saved_at", 0), reverse=True)


def _meta(folder: Path) -> dict:
    try:
        meta = json.loads((folder / SESSION_JSON).read_text(encoding="utf-8"))
        return meta if isinstance(meta, dict) else {}
    except (OSError, ValueError):
        return {}


def _unlocked(folder: Path) -> bool:
    """True when no running Sandcastle holds this session (QLockFile removes a stale lock of a dead process)."""
    lock = _lock_for(folder)
    if lock.tryLock(0):
        lock.unlock()
        return True
    return False


def _lock_for(folder: Path) -> QLockFile:
    lock = QLockFile(str(folder) + ".lock")
    lock.setStaleLockTime(0)  # stale only when its process is gone, however long a session runs
    return lock


def discard(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    Path(str(folder) + ".lock").unlink(missing_ok=True)
