"""Many generations back to back in the real window (offscreen): resident memory after each one.

    python -m benchmarks.soak [--generations 200] [--steps 2] [--size tiny] [--json out.json]

Each generation is applied (one undo step) and the undo history is then cleared, so what is
measured is everything but the history, which grows by design. Reports RSS after a warm-up of 10,
at the end, the growth and the least-squares slope per generation.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6
    except OSError:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3  # peak, not current, where /proc is missing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generations", type=int, default=200)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--size", default="tiny", choices=("tiny", "small", "sd15"))
    parser.add_argument("--json")
    args = parser.parse_args()

    from skimage import data

    from benchmarks.offscreen import open_window, private_folder
    from engines.testing import write_model

    folder = private_folder("sandcastle-soak-")
    model = write_model(folder / "model", "inpaint", args.size)
    app, win = open_window(data.astronaut(), folder, "--model", str(model))
    while not win.panel.generate.isEnabled():
        app.processEvents()
    win.document.mask[150:350, 150:350] = 255
    win.panel.steps.setValue(args.steps)
    done: list[str] = []
    win.generation.finished.connect(lambda *a: done.append("ok"))
    win.generation.failed.connect(lambda job, message: done.append(message))

    curve, started = [], time.perf_counter()
    for i in range(args.generations):
        done.clear()
        win.generation.generate()
        while not done:
            app.processEvents()
            time.sleep(0.001)
        if done[0] != "ok":
            raise SystemExit(f"generation {i + 1} failed: {done[0]}")
        win.document.undo_stack.clear()
        gc.collect()
        curve.append(rss_mb())
    seconds = time.perf_counter() - started
    win.shutdown()

    warm = curve[9] if len(curve) > 10 else curve[0]
    after = np.arange(10, len(curve))
    slope = float(np.polyfit(after, np.array(curve[10:]), 1)[0]) if len(after) > 2 else 0.0
    figures = {"generations": args.generations, "steps": args.steps, "size": args.size, "seconds": round(seconds, 1),
               "rss_after_10_mb": round(warm, 1), "rss_end_mb": round(curve[-1], 1), "growth_after_warmup_mb": round(curve[-1] - warm, 1),
               "slope_kb_per_generation": round(slope * 1000, 1), "rss_max_mb": round(max(curve), 1)}
    for key, value in figures.items():
        print(f"{key:<26} {value}")
    if args.json:
        Path(args.json).write_text(json.dumps({**figures, "curve_mb": [round(v, 1) for v in curve]}, indent=1))


if __name__ == "__main__":
    main()
