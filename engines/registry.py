"""Engines are plugins under the entry-point group `sandcastle.engines` (the built-in ones too).

An engine module is imported only when its task is first used, so starting the editor does not
pay for torch and diffusers until the person generates.
"""

from __future__ import annotations

import threading
from importlib import import_module
from importlib.metadata import entry_points

from engines.api import Engine, InputError

GROUP = "sandcastle.engines"

# Used only when Sandcastle runs from a source checkout that was never installed, so the
# entry points in pyproject.toml are not registered. Keep in step with pyproject.toml.
BUILTIN = {
    "inpaint": "engines.inpaint:InpaintEngine",
    "uncrop": "engines.uncrop:UncropEngine",
    "edit": "engines.edit:EditEngine",
    "colorize": "engines.colorize:ColorizeEngine",
    "attributes": "engines.diffae.engine:AttributesEngine",
}

_lock = threading.Lock()
_engines: dict[str, Engine] = {}


def available() -> list[str]:
    """Task names that have an engine, in a stable order (built-in ones first)."""
    found = {ep.name: ep.value for ep in entry_points(group=GROUP)}
    names = [n for n in BUILTIN if n in found or not found] + sorted(n for n in found if n not in BUILTIN)
    return names


def get(name: str) -> Engine:
    """The engine for a task name, imported and created on first use."""
    with _lock:
        if name not in _engines:
            target = {ep.name: ep.value for ep in entry_points(group=GROUP)}.get(name) or BUILTIN.get(name)
            if target is None:
                raise InputError(f"There is no engine for {name!r}; available: {', '.join(available())}.")
            module_name, _, attr = target.partition(":")
            _engines[name] = getattr(import_module(module_name), attr)()
        return _engines[name]
