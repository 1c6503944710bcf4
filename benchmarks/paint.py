"""Painting latency on a very large picture: how long the canvas takes per stroke segment (the
mouse move handled and the viewport repainted), and at a stroke's start and end (the undo step).

    python -m benchmarks.paint [--width 8000 --height 6000] [--segments 300] [--json out.json]

Runs the real window offscreen (QT_QPA_PLATFORM=offscreen unless set), at "fit to window" zoom and
at 100 %, with a hard and a soft brush. A person notices lag above ~16 ms per segment (one frame at 60 Hz).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def stroke_timings(win, app, centre, radius: float, segments: int) -> dict:
    from PySide6.QtCore import QEvent, QObject, Qt
    from PySide6.QtTest import QTest

    class PaintCounter(QObject):
        count = 0

        def eventFilter(self, obj, event):
            if event.type() == QEvent.Paint:
                PaintCounter.count += 1
            return False

    view, vp = win.canvas, win.canvas.viewport()
    counter = PaintCounter()
    vp.installEventFilter(counter)
    points = [view.mapFromScene(centre[0] + radius * math.cos(a), centre[1] + radius * math.sin(a))
              for a in np.linspace(0, 2 * math.pi, segments + 1)]
    t0 = time.perf_counter()
    QTest.mousePress(vp, Qt.LeftButton, Qt.NoModifier, points[0])
    app.processEvents()
    start_ms = (time.perf_counter() - t0) * 1000
    per_segment = []
    for p in points[1:]:
        t0 = time.perf_counter()
        QTest.mouseMove(vp, p)
        app.processEvents()  # the repaint Qt scheduled for what changed: the person sees the stroke once it is drawn
        per_segment.append((time.perf_counter() - t0) * 1000)
    t0 = time.perf_counter()
    QTest.mouseRelease(vp, Qt.LeftButton, Qt.NoModifier, points[-1])
    app.processEvents()
    end_ms = (time.perf_counter() - t0) * 1000
    app.processEvents()
    vp.removeEventFilter(counter)
    assert PaintCounter.count >= segments, "the viewport was not repainted per segment: the timings would not count the drawing"
    return {"median_ms": statistics.median(per_segment), "p95_ms": float(np.percentile(per_segment, 95)), "max_ms": max(per_segment),
            "stroke_start_ms": start_ms, "stroke_end_ms": end_ms}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=8000)
    parser.add_argument("--height", type=int, default=6000)
    parser.add_argument("--segments", type=int, default=300)
    parser.add_argument("--json")
    args = parser.parse_args()

    from PIL import Image

    from benchmarks.offscreen import open_window, private_folder

    folder = private_folder("sandcastle-paint-")
    rng = np.random.default_rng(0)
    small = rng.integers(0, 255, (args.height // 16, args.width // 16, 3), dtype=np.uint8)
    Image.fromarray(small).resize((args.width, args.height), Image.BILINEAR).save(folder / "big.png", compress_level=1)
    started = time.perf_counter()
    app, win = open_window(folder / "big.png", folder)
    open_s = time.perf_counter() - started

    rows, full_repaint = [], {}
    centre = (args.width / 2, args.height / 2)
    for zoom in ("fit", "100%"):
        if zoom == "fit":
            win.canvas.fit()
        else:
            win.canvas.actual_size()
            win.canvas.centerOn(*centre)
        scale = win.canvas.zoom
        for hardness, size in ((100, 40), (100, 300), (50, 300)):
            win.menu_actions.brush_hardness.setValue(hardness)
            win.canvas.set_brush_size(size if zoom == "100%" else int(size / scale / 4))
            radius = min(300 / scale, args.height / 3)  # about 300 screen pixels
            timing = stroke_timings(win, app, centre, radius, args.segments)
            rows.append({"zoom": f"{scale * 100:.0f}%", "brush_px": win.canvas.brush_size, "hardness": hardness, **timing})
        repaints = []
        for i in range(20):  # what a pan or a zoom step costs: the whole viewport drawn again
            win.canvas.horizontalScrollBar().setValue(win.canvas.horizontalScrollBar().value() + (5 if i % 2 else -5))
            t0 = time.perf_counter()
            win.canvas.viewport().repaint()
            repaints.append((time.perf_counter() - t0) * 1000)
        full_repaint[f"{scale * 100:.0f}%"] = statistics.median(repaints)
    win.shutdown()

    print(f"picture {args.width}×{args.height}, opened in {open_s:.1f} s; {args.segments} segments per stroke")
    print(f"{'zoom':>6} {'brush':>6} {'hard':>5} {'median':>8} {'p95':>8} {'max':>8} {'start':>8} {'end':>8}  (ms)")
    for r in rows:
        print(f"{r['zoom']:>6} {r['brush_px']:>6} {r['hardness']:>5} {r['median_ms']:8.2f} {r['p95_ms']:8.2f} {r['max_ms']:8.2f} "
              f"{r['stroke_start_ms']:8.1f} {r['stroke_end_ms']:8.1f}")
    print("whole-viewport repaint (a pan or zoom step), median ms: " + ", ".join(f"{z} {ms:.1f}" for z, ms in full_repaint.items()))
    if args.json:
        Path(args.json).write_text(json.dumps({"width": args.width, "height": args.height, "open_s": open_s, "rows": rows,
                                               "full_repaint_ms": full_repaint}, indent=1))


if __name__ == "__main__":
    main()
