"""Saving never loses a picture: the temporary file is synced before the rename and never left behind
(a later save removes what a killed one left, never what a running one is writing), and every failure
says in one sentence what to do."""

import errno
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engines import imaging, services
from engines.api import InputError

ROOT = Path(__file__).resolve().parents[2]
PICTURE = np.full((20, 30, 3), 90, np.uint8)


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def dead_pid() -> int:
    """The id of a process that has ended (and been reaped)."""
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    return done.pid


def test_the_file_is_synced_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", "folder" if os.path.isdir(f"/proc/self/fd/{fd}") else "file"))
        real_fsync(fd)

    def replace(source, target):
        events.append(("replace", Path(source).name))
        real_replace(source, target)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    imaging.save_image(tmp_path / "out.png", PICTURE)
    assert [e[0] for e in events] == ["fsync", "replace", "fsync"]
    assert events[0][1] == "file" and (events[2][1] == "folder" or not Path("/proc/self/fd").is_dir())
    temporary = events[1][1]
    assert temporary.startswith(f".sandcastle-{os.getpid()}-") and temporary.endswith(".png")  # ours, and whose
    assert names(tmp_path) == ["out.png"]


def test_a_full_disk_says_so_and_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "keep.png"
    Image.fromarray(np.full((20, 20, 3), 7, np.uint8)).save(target)
    before = target.read_bytes()
    real_save = Image.Image.save

    def full_disk(self, fp, *args, **kwargs):
        fp.write(b"\x89PNG partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", full_disk)
    with pytest.raises(InputError, match=r"^No space left on the disk for keep\.png; free some space or save somewhere else\.$"):
        imaging.save_image(target, PICTURE)
    assert target.read_bytes() == before and names(tmp_path) == ["keep.png"]
    monkeypatch.setattr(Image.Image, "save", real_save)

    def full_at_sync(fd):
        raise OSError(errno.ENOSPC, "No space left on device")  # what network and copy-on-write file systems report late

    monkeypatch.setattr(os, "fsync", full_at_sync)
    with pytest.raises(InputError, match="No space left"):
        imaging.save_image(target, PICTURE)
    assert target.read_bytes() == before and names(tmp_path) == ["keep.png"]


@pytest.mark.parametrize("error", [PermissionError(errno.EACCES, "Permission denied"), OSError(errno.EROFS, "Read-only file system")])
def test_a_read_only_folder_or_disk_says_so(tmp_path, monkeypatch, error):
    import tempfile

    def refuse(*args, **kwargs):
        raise error

    monkeypatch.setattr(tempfile, "mkstemp", refuse)  # root ignores permissions, so the refusal is injected
    with pytest.raises(InputError, match=rf"^The folder {tmp_path} is read-only; save somewhere else\.$"):
        imaging.save_image(tmp_path / "new.png", PICTURE)
    assert names(tmp_path) == []


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root may write into a read-only folder")
def test_a_really_read_only_folder_says_so(tmp_path):
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(InputError, match="is read-only; save somewhere else"):
            imaging.save_image(folder / "new.png", PICTURE)
    finally:
        folder.chmod(0o755)
    assert names(folder) == []


def test_a_read_only_file_a_missing_folder_and_a_folder_in_the_way(tmp_path):
    target = tmp_path / "done.png"
    Image.fromarray(PICTURE).save(target)
    before = target.read_bytes()
    target.chmod(0o444)
    with pytest.raises(InputError, match=r"^done\.png is read-only; save under another name or in another folder\.$"):
        imaging.save_image(target, np.zeros_like(PICTURE))
    assert target.read_bytes() == before
    with pytest.raises(InputError, match=r"^The folder .*nowhere does not exist; choose a folder that does\.$"):
        imaging.save_image(tmp_path / "nowhere" / "new.png", PICTURE)
    (tmp_path / "album.png").mkdir()
    with pytest.raises(InputError, match=r"^album\.png is a folder; choose a file name to save to\.$"):
        imaging.save_image(tmp_path / "album.png", PICTURE)
    assert names(tmp_path) == ["album.png", "done.png"]


def test_a_leftover_of_a_dead_process_is_removed_and_nothing_else(tmp_path):
    gone = dead_pid()
    stale = tmp_path / f".sandcastle-{gone}-abcd_123.png"
    stale.write_bytes(b"half a picture")
    mine = tmp_path / f".sandcastle-{os.getpid()}-abcd_123.png"  # this process's: a save on another thread
    mine.write_bytes(b"being written")
    alive_parent = tmp_path / f".sandcastle-{os.getppid()}-abcd_123.jpg"
    alive_parent.write_bytes(b"being written")
    others = [".sandcastle-notes.png", f".sandcastle-{gone}-abcd_123.txt", f"sandcastle-{gone}-abcd_123.png", "photo.png"]
    for name in others:
        (tmp_path / name).write_bytes(b"not ours")
    imaging.save_image(tmp_path / "out.png", PICTURE)
    assert not stale.exists() and mine.exists() and alive_parent.exists()
    assert all((tmp_path / name).exists() for name in others)
    # A day old, a live process id is another program's now (ids are reused): the file is stale.
    day_ago = time.time() - 2 * 86400
    os.utime(alive_parent, (day_ago, day_ago))
    assert services.remove_stale_temporaries(tmp_path) == [alive_parent]


@pytest.mark.skipif(os.name != "posix", reason="flock")
def test_a_locked_temporary_is_kept_whatever_its_process_id_says(tmp_path):
    import fcntl

    # A save in another sandbox or on another computer sharing the folder: its id means nothing here, its lock does.
    live = tmp_path / f".sandcastle-{dead_pid()}-zzzzzzzz.webp"
    live.write_bytes(b"being written")
    with open(live, "rb") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        assert services.remove_stale_temporaries(tmp_path) == [] and live.exists()
    assert services.remove_stale_temporaries(tmp_path) == [live]  # the writer is gone: its lock went with it


WRITER = """
import sys, time
import numpy as np
from PIL import Image
from engines import imaging

real_save = Image.Image.save

def stuck(self, fp, *args, **kwargs):
    fp.write(b"\\x89PNG the first half")
    fp.flush()
    print("writing", flush=True)
    time.sleep(120)  # killed long before this ends

Image.Image.save = stuck
imaging.save_image(sys.argv[1], np.zeros((64, 64, 3), np.uint8))
"""


@pytest.mark.skipif(os.name != "posix", reason="SIGKILL")
def test_a_save_killed_mid_write_is_cleaned_up_by_the_next_save_but_not_while_it_runs(tmp_path):
    writer = subprocess.Popen([sys.executable, "-c", textwrap.dedent(WRITER), str(tmp_path / "big.png")], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "writing"
        temporaries = [p for p in tmp_path.iterdir() if p.name.startswith(".sandcastle-")]
        assert [p.name.split("-")[1] for p in temporaries] == [str(writer.pid)]
        imaging.save_image(tmp_path / "other.png", PICTURE)  # another save into the same folder while it writes
        assert temporaries[0].exists()
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait(30)
        writer.stdout.close()
    assert temporaries[0].exists() and not (tmp_path / "big.png").exists()  # what a kill leaves
    imaging.save_image(tmp_path / "other.png", PICTURE)  # the next run's save
    assert names(tmp_path) == ["other.png"]


def test_cleaning_a_folder_that_cannot_be_listed_is_no_error(tmp_path):
    assert services.remove_stale_temporaries(tmp_path / "missing") == []
    assert services.remove_stale_temporaries(tmp_path) == []
    (tmp_path / f".sandcastle-{10**30}-abcdefgh.png").write_bytes(b"")  # an id no system has
    services.remove_stale_temporaries(tmp_path)
