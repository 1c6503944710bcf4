"""Where Sandcastle keeps the person's own data and its caches; shared by the attributes engine and the services.

Torch-free, so the editor can ask on the GUI thread.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def user_data_folder() -> Path:
    """Sandcastle's folder in the platform's user data location (own sliders, autosave)."""
    import platformdirs

    return Path(platformdirs.user_data_dir("sandcastle"))


def log_folder() -> Path:
    """Sandcastle's folder in the platform's user log location: the window's log and the command line's failures."""
    import platformdirs

    return Path(platformdirs.user_log_dir("sandcastle"))


def cache_folder() -> Path:
    """Sandcastle's folder in the platform's user cache location (demo models, compiled kernels)."""
    import platformdirs

    return Path(platformdirs.user_cache_dir("sandcastle"))


def own_sliders_folder(params: dict[str, Any]) -> Path:
    """The folder of the person's own sliders: the `directions_folder` parameter, or `directions` in
    Sandcastle's data folder."""
    return Path(params["directions_folder"]) if params.get("directions_folder") else user_data_folder() / "directions"
