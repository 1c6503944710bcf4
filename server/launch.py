"""A `sandcastle serve` process on this computer, for the tests and the benchmark: started with a Ray
temporary folder of its own, waited for on /health with a time limit, and always stopped with every
process it started (Ray's own included), by their ids.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class LocalServer:
    """`main.py serve --port <free port> …` on loopback. `env` is added to this process's environment
    (XDG and Hugging Face folders, thread counts); the server's output goes to `log`."""

    def __init__(self, *args: str, token: str = "", env: dict[str, str] | None = None, log: Path | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token = token
        self.args = ["serve", "--port", str(self.port), *args] + (["--token", token] if token else [])
        self.env = dict(env or {})
        self.ray_dir = tempfile.mkdtemp(prefix="scr-", dir="/tmp")  # short: Ray's socket paths live under it
        self.log = Path(log) if log else Path(self.ray_dir + ".log")  # beside Ray's folder, which stop() removes
        self.process: subprocess.Popen | None = None
        self.seen: dict[int, float] = {}  # pid → start time of every process of the server seen so far

    def start(self, timeout: float = 240.0) -> "LocalServer":
        if self.process is not None:
            raise RuntimeError("this server was started already")
        env = {**os.environ, **self.env, "RAY_TMPDIR": self.ray_dir, "RAY_USAGE_STATS_ENABLED": "0"}
        env.pop("RAY_ADDRESS", None)
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen([sys.executable, str(ROOT / "main.py"), *self.args], cwd=ROOT, env=env, stdout=out,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            self.wait_healthy(timeout)
        except BaseException:
            self.stop()
            raise
        self.remember()
        return self

    def wait_healthy(self, timeout: float) -> None:
        from engines import remote
        from engines.wire import RemoteError

        deadline = time.monotonic() + timeout
        while True:
            self.remember()
            if self.process.poll() is not None:
                raise RuntimeError(f"sandcastle serve ended with {self.process.returncode}: {self.tail()}")
            try:
                if remote.get_json(self.url, "/health", self.token, timeout=5).get("ok"):
                    return
            except RemoteError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"sandcastle serve did not answer within {timeout:g} s: {self.tail()}")
            time.sleep(1.0)

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def remember(self) -> None:
        """Note every process of the server now: its descendants and its session's (Ray's workers are
        children of its raylet; a killed parent leaves them orphaned, so they are noted while alive)."""
        import psutil

        if self.process is None:
            return
        try:
            root = psutil.Process(self.process.pid)
            found = [root, *root.children(recursive=True)]
        except psutil.Error:
            found = []
        for proc in psutil.process_iter(["pid"]):
            try:
                if os.getsid(proc.pid) == self.process.pid:
                    found.append(proc)
            except (OSError, psutil.Error):
                pass
        for proc in found:
            try:
                self.seen[proc.pid] = proc.create_time()
            except psutil.Error:
                pass

    def alive(self) -> list:
        import psutil

        found = []
        for pid, created in self.seen.items():
            try:
                proc = psutil.Process(pid)
                if proc.create_time() == created and proc.status() != psutil.STATUS_ZOMBIE:
                    found.append(proc)
            except psutil.Error:
                pass
        return found

    def kill(self) -> None:
        """Kill the server and all of Ray's processes now (a server dying mid-job)."""
        self.remember()
        for proc in self.alive():
            try:
                proc.kill()
            except Exception:
                pass
        if self.process is not None:
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                pass

    def stop(self, timeout: float = 60.0) -> None:
        """SIGTERM (the server takes its application and its Ray down), then kill whatever is left."""
        if self.process is None:
            return
        self.remember()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        deadline = time.monotonic() + 10
        while self.alive() and time.monotonic() < deadline:
            time.sleep(0.5)
        self.kill()
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        if not self.alive():
            shutil.rmtree(self.ray_dir, ignore_errors=True)

    def __enter__(self) -> "LocalServer":
        return self if self.process is not None else self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
