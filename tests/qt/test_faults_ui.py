"""Faults seen from the window: out of memory mid-run, saving into a full or read-only place, closing
while generating, and many generations in a row."""

import gc
import threading

import numpy as np
import pytest

from engines.api import OutOfMemory
from tests.qt.conftest import paint_stroke


def test_out_of_memory_mid_run_is_explained_and_the_next_run_works(qtbot, window, original, monkeypatch):
    paint_stroke(qtbot, window, [(200, 200), (300, 200)])
    engine = window.generation.engines["inpaint"]
    real_run = engine.run

    def run_out_of_memory(request, on_step, cancel):
        def step(preview):
            on_step(preview)
            if preview.step == 2:
                raise OutOfMemory("The CUDA ran out of memory generating at 512×512: lower Generation size, or set Low-memory mode to lowest.")
        return real_run(request, step, cancel)

    monkeypatch.setattr(engine, "run", run_out_of_memory)
    with qtbot.waitSignal(window.generation.failed, timeout=120000):
        window.generation.generate()
    assert "ran out of memory" in window.panel.message.text() and np.array_equal(window.document.image, original)
    assert not window.canvas.preview_item.isVisible()
    monkeypatch.setattr(engine, "run", real_run)
    with qtbot.waitSignal(window.generation.finished, timeout=120000):
        window.generation.generate()
    assert window.document.undo_stack.count() == 2  # the stroke and the result


def test_saving_into_a_full_disk_keeps_the_file_and_the_document(qtbot, window, tmp_path, monkeypatch):
    import errno

    from PIL import Image

    target = tmp_path / "photo.png"
    window.document.save(target)
    before = target.read_bytes()
    paint_stroke(qtbot, window, [(200, 200), (300, 200)])
    with qtbot.waitSignal(window.generation.finished, timeout=120000):
        window.generation.generate()

    def full_disk(self, fp, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", full_disk)
    assert not window.files.save()
    assert "No space left" in window.panel.message.text() and target.read_bytes() == before
    assert window.document.modified  # still unsaved, so closing will ask


def test_closing_while_generating_stops_the_worker_and_leaves_no_thread(qtbot, window):
    paint_stroke(qtbot, window, [(200, 200), (300, 200)])
    window.panel.steps.setValue(50)
    steps = []
    window.generation.stepped.connect(lambda job, step: steps.append(step.step))
    window.generation.generate()
    qtbot.waitUntil(lambda: len(steps) >= 1, timeout=120000)
    assert window.close()
    assert not window.generation.runner.running and not window.generation.downloads.running
    assert len(steps) < 50
    assert not [t for t in threading.enumerate() if t.name.startswith("sandcastle")]


def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 1e6


@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/statm"), reason="RSS is read from /proc")
def test_many_generations_in_a_row_do_not_grow_memory(qtbot, window):
    """30 generations here (benchmarks/soak.py runs 200 and reports the curve): after a warm-up of 10,
    the resident memory may move by allocator noise but must not climb with each generation."""
    paint_stroke(qtbot, window, [(200, 200), (300, 200)])
    window.panel.steps.setValue(2)

    def one():
        with qtbot.waitSignal(window.generation.finished, timeout=120000):
            window.generation.generate()
        window.document.undo_stack.clear()  # the undo history would grow by design; the question is everything else

    for _ in range(10):
        one()
    gc.collect()
    start = rss_mb()
    for _ in range(30):
        one()
    gc.collect()
    growth = rss_mb() - start
    print(f"RSS growth over 30 generations after warm-up: {growth:+.1f} MB")
    assert growth < 40
