"""Time from starting Sandcastle to a visible window, and which thread first imports torch.

    python -m benchmarks.startup [--runs 5] [--json FILE]

Each run is a fresh process (`python -c …` building the real window with main.build, a picture and
a tiny model), in settings, data and cache folders of its own. The clock starts before the
interpreter does and stops when the window has been shown and painted once; the engine then loads
on the worker thread, and the run reports which thread first imported torch, diffusers and
transformers (the GUI thread never should: they take seconds).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "diffusers", "transformers")

CHILD = r"""
import importlib.abc, json, sys, threading, time
first = {}

class Watch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        top = name.partition(".")[0]
        if top in HEAVY and top not in first:
            first[top] = "gui" if threading.current_thread() is threading.main_thread() else "worker"
        return None

sys.meta_path.insert(0, Watch())
from PySide6.QtWidgets import QApplication
app = QApplication([])
import main
win = main.build(sys.argv[1:])
win.show()
app.processEvents()
win.repaint()
print("VISIBLE", flush=True)
gui_before_engine = dict(first)
deadline = time.monotonic() + 120
while not win.panel.generate.isEnabled() and time.monotonic() < deadline:
    app.processEvents()
    time.sleep(0.01)
print(json.dumps({"first_imports": first, "engine_ready": win.panel.generate.isEnabled()}), flush=True)
win.shutdown()
"""


def measure_once(picture: Path, model: Path, timeout: float = 180) -> dict:
    """One start in a fresh process: seconds until the window was visible, and where the heavy imports happened."""
    home = Path(tempfile.mkdtemp(prefix="sandcastle-startup-"))
    env = {**os.environ, "QT_QPA_PLATFORM": os.environ.get("QT_QPA_PLATFORM", "offscreen"), "HF_HUB_OFFLINE": "1",
           "XDG_CONFIG_HOME": str(home / "config"), "XDG_DATA_HOME": str(home / "data"), "XDG_CACHE_HOME": str(home / "cache"),
           "PYTHONPATH": str(ROOT)}
    code = f"HEAVY = {HEAVY!r}\n{CHILD}"
    started = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-c", code, str(picture), "--model", str(model)], cwd=ROOT, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = child.stdout.readline()
        visible = time.perf_counter() - started
        report = child.stdout.readline()
        child.wait(timeout)
    finally:
        if child.poll() is None:
            child.kill()
    if not line.startswith("VISIBLE") or not report:
        raise RuntimeError(f"the window did not start: {child.stderr.read()[-2000:]}")
    return {"seconds_to_window": visible, **json.loads(report)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", help="write the figures here too")
    args = parser.parse_args()
    import numpy as np
    from PIL import Image

    from engines.testing import write_model

    folder = Path(tempfile.mkdtemp(prefix="sandcastle-startup-model-"))
    model = write_model(folder / "inpaint", "inpaint")
    picture = folder / "picture.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (512, 512, 3), dtype=np.uint8)).save(picture)
    runs = []
    for i in range(args.runs):
        runs.append(measure_once(picture, model))
        print(f"run {i + 1}: window visible after {runs[-1]['seconds_to_window']:.2f} s; first imports: {runs[-1]['first_imports']}", flush=True)
    summary = {"runs": runs, "median_seconds_to_window": statistics.median(r["seconds_to_window"] for r in runs)}
    print(f"median time to a visible window: {summary['median_seconds_to_window']:.2f} s over {len(runs)} runs")
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
