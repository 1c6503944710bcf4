"""The window opens without torch: the heavy libraries are imported on the worker thread only."""

from PIL import Image

from benchmarks.startup import HEAVY, measure_once


def test_the_window_opens_before_and_without_torch_on_the_gui_thread(model_dir, tmp_path, photo):
    picture = tmp_path / "photo.png"
    Image.fromarray(photo).save(picture)
    run = measure_once(picture, model_dir("inpaint"))
    assert run["engine_ready"]  # the engine did load, on the worker thread
    assert set(run["first_imports"]) == set(HEAVY)
    assert all(thread == "worker" for thread in run["first_imports"].values()), run["first_imports"]
