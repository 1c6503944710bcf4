"""Starting Sandcastle on a computer that cannot show the window yet: help and argument errors need no
display, and missing X11 libraries are named with the packages to install instead of Qt's abort."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

import main

ROOT = Path(__file__).resolve().parents[2]
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the check is for X11 on Linux")


def without_display(**extra) -> dict[str, str]:
    """This test session's environment (its private folders included) with no display and no Qt platform chosen."""
    env = {k: v for k, v in os.environ.items() if k not in ("QT_QPA_PLATFORM", "DISPLAY", "WAYLAND_DISPLAY", "XDG_SESSION_TYPE")}
    return {**env, **extra}


def python(*args, env, timeout=120):
    return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env)


@pytest.mark.parametrize("command", [[], ["run"], ["demo-model"], ["convert-diffae"]])
def test_help_needs_no_display(command):
    done = python(ROOT / "main.py", *command, "--help", env=without_display())
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: {' '.join(['sandcastle', *command])} ") and "--help" in done.stdout


def test_a_bad_argument_is_argparse_s_error_without_qt():
    done = python(ROOT / "main.py", "photo.png", "--zoom", "2", env=without_display())
    assert done.returncode == 2
    assert done.stderr.strip() == "sandcastle: unrecognized arguments: --zoom 2 (see sandcastle --help)"  # one line, not the usage block
    assert "qt." not in done.stderr.lower()


def test_help_imports_no_qt():
    code = "import sys, main\ntry:\n    main.main(['--help'])\nexcept SystemExit:\n    pass\nprint('Qt imported:', 'PySide6' in sys.modules)"
    done = python("-c", code, env=without_display())
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("Qt imported: False")


@linux_only
def test_a_missing_x11_library_names_its_package_and_exits_1():
    # The library lookup is replaced, so nothing needs uninstalling; the display named is one no X server
    # serves, so if the check let Qt start, Qt's own abort would fail the test instead of opening a window.
    missing = ("libxcb-cursor.so.0", "libxkbcommon-x11.so.0")
    code = f"import sys, main\nmain.library_loads = lambda soname: soname not in {missing!r}\nsys.exit(main.main([]))"
    done = python("-c", code, env=without_display(DISPLAY=":97"))
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "libxcb-cursor.so.0, libxkbcommon-x11.so.0" in lines[0]
    assert lines[0].endswith("sudo apt-get install libxcb-cursor0 libxkbcommon-x11-0")


@linux_only
def test_every_library_missing_names_every_package():
    message = main.missing_window_libraries({"DISPLAY": ":0"}, lambda soname: False)
    assert message.startswith("sandcastle: the window needs system libraries that are not installed (libxcb.so.1, ")
    assert message.endswith("sudo apt-get install " + " ".join(main.XCB_LIBRARIES.values()))
    assert "\n" not in message


@linux_only
def test_with_every_library_present_the_check_says_nothing():
    for environ in ({"DISPLAY": ":0"}, {"DISPLAY": ":0", "QT_QPA_PLATFORM": "xcb"}):
        assert main.missing_window_libraries(environ, lambda soname: True) is None


@linux_only
@pytest.mark.parametrize(
    "environ,checked",
    [
        ({"DISPLAY": ":0"}, True),
        ({"DISPLAY": ":0", "QT_QPA_PLATFORM": "xcb"}, True),
        ({"DISPLAY": ":0", "QT_QPA_PLATFORM": "xcb:dpi=96;offscreen"}, True),
        ({"DISPLAY": ":0", "WAYLAND_DISPLAY": "wayland-0", "QT_QPA_PLATFORM": "xcb"}, True),
        ({}, False),  # no display: Qt's own message says so
        ({"DISPLAY": ":0", "QT_QPA_PLATFORM": "offscreen"}, False),
        ({"DISPLAY": ":0", "QT_QPA_PLATFORM": "wayland"}, False),
        ({"DISPLAY": ":0", "WAYLAND_DISPLAY": "wayland-0"}, False),  # Qt tries Wayland first there
        ({"DISPLAY": ":0", "XDG_SESSION_TYPE": "wayland"}, False),
    ],
)
def test_only_an_x11_window_is_checked(environ, checked):
    assert (main.missing_window_libraries(environ, lambda soname: False) is not None) == checked
