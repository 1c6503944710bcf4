"""The window on a real X11 desktop (Xvfb, Qt's xcb platform) at 1366×768: what offscreen tests miss,
the platform's own shortcuts and a screen that is smaller than the window wants. The probe
(tests/qt/xcb_probe.py) runs in its own process with private settings, data and cache folders."""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

PROBE = Path(__file__).with_name("xcb_probe.py")
pytestmark = pytest.mark.skipif(shutil.which("xvfb-run") is None,
                                reason="needs Xvfb (apt-get install xvfb; .ci/run installs it where it can)")


@pytest.fixture(scope="module")
def findings(tmp_path_factory, photo):
    base = tmp_path_factory.mktemp("xcb")
    Image.fromarray(photo).save(base / "photo.png")
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env.update(QT_QPA_PLATFORM="xcb", HF_HUB_OFFLINE="1", XDG_CONFIG_HOME=str(base / "config"), XDG_DATA_HOME=str(base / "data"),
               XDG_CACHE_HOME=str(base / "cache"), HF_HOME=str(base / "hf"))
    probe = subprocess.Popen(["xvfb-run", "-a", "-s", "-screen 0 1366x768x24", sys.executable, str(PROBE), str(base / "photo.png"), str(base)],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = probe.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(probe.pid, signal.SIGKILL)  # Xvfb and the probe with it: a stuck window must not outlive the test
        stdout, stderr = probe.communicate()
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    assert lines, stderr[-3000:]
    return json.loads(lines[-1]), base


def test_every_task_fits_a_1366x768_screen_with_generate_cancel_and_progress_in_view(findings):
    found, shots = findings
    assert found["platform"] == "xcb" and found["screen"][1] <= 768
    assert set(found["tasks"]) == {"inpaint", "uncrop", "edit", "colorize", "attributes"}
    for task, seen in found["tasks"].items():
        assert seen["window_on_screen"] and seen["generate_on_screen"] and seen["cancel_on_screen"] and seen["progress_on_screen"], (task, seen)
        picture = np.asarray(Image.open(shots / f"{task}.png"))
        assert picture.shape[0] <= 768 and picture.std() > 10  # a real screenshot of the window, not a blank one


def test_undo_redo_and_tool_keys_work_and_no_shortcut_clashes(findings):
    found, _ = findings
    assert all(found["keys"].values()), found["keys"]
    assert found["clashes"] == {} and found["ambiguous"] == []
    assert found["redo_keys"][:2] == ["Ctrl+Shift+Z", "Ctrl+Y"] and len(found["redo_keys"]) == len(set(found["redo_keys"]))
