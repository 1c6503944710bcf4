"""A job on Sandcastle's server (`sandcastle serve`, Ray Serve on loopback) against the same job in
this process: how late each preview arrives, and what a whole job costs on top.

    python -m benchmarks.remote [--steps 10] [--repeats 5] [--threads 1] [--json FILE]

One server process with the tiny demo inpainting model (`serve --demo`), in folders of its own; in
this process the same engine (`registry.get("inpaint")`) on the same demo weights, picture (512×512
astronaut, a 240×210 blob mask), seed and torch thread count (`--threads`, both sides), so both
compute the same thing (the test checks they give the same bytes). Runs are interleaved, after one
warm-up each (model loads); figures are medians over the repeats, all measured in this run:

- preview latency: the server's clock when the engine reported the step (each step message carries
  it; one machine, one clock) to the moment its line arrived here, split into the server's part
  (rendering the step's picture and encoding the JPEG) and the rest (Ray's proxy, HTTP, socket); plus
  decoding the frame here. Against it: the in-process path, step reported → picture rendered on a
  hand-over thread, as the app does.
- per-job overhead: the wall time of `RemoteEngine.run` (encode the request as PNG, send, stream,
  decode the lossless PNG result) against the in-process `engine.run`, as a ratio and in seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "benchmark"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


class HandOver:
    """The app's shape: the step callback only queues; a thread makes each step's picture. Records, per
    step, (when the step was reported, when its picture was ready)."""

    def __init__(self) -> None:
        self.steps: queue.Queue = queue.Queue()
        self.done: list[tuple[float, float]] = []
        self.thread = threading.Thread(target=self.work, daemon=True)
        self.thread.start()

    def on_step(self, step) -> None:
        if not step.stage:
            self.steps.put((step, time.time()))

    def work(self) -> None:
        while (item := self.steps.get()) is not None:
            step, reported = item
            step.picture()
            self.done.append((reported, time.time()))

    def close(self) -> list[tuple[float, float]]:
        self.steps.put(None)
        self.thread.join(60)
        return self.done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads, here and on the server")
    parser.add_argument("--start-limit", type=float, default=240, help="seconds the server may take to start")
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    import warnings

    warnings.filterwarnings("ignore", message="`torch_dtype` is deprecated", category=FutureWarning)  # as main.py does

    home = Path(tempfile.mkdtemp(prefix="sandcastle-remote-bench-"))
    folders = {name: str(home / name.lower()) for name in ("XDG_CACHE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME")}
    threads = {"OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    os.environ.update(folders, HF_HOME=str(home / "hf"), HF_HUB_OFFLINE="1", **threads)
    sys.path.insert(0, str(ROOT))

    import numpy as np
    import torch
    from skimage import data

    from engines import registry, services
    from engines.api import CancelToken, Request, Task
    from server.launch import LocalServer
    from tests.conftest import blob_mask

    torch.set_num_threads(args.threads)
    image = np.ascontiguousarray(data.astronaut())
    mask = blob_mask(512, 512, seed=2)
    figures: dict = {"steps": args.steps, "repeats": args.repeats, "threads": args.threads}

    def report(name: str, value, unit: str = "") -> None:
        figures[name] = value
        shown = f"{value:.4g}" if isinstance(value, float) else value
        print(f"{name:36s} {shown} {unit}".rstrip(), flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps(figures, indent=2))

    began = time.monotonic()
    with LocalServer("--demo", "--threads", str(args.threads), token=TOKEN, env={**folders, "HF_HUB_OFFLINE": "1", **threads},
                     log=home / "server.log").start(args.start_limit) as server:
        report("server_start_s", time.monotonic() - began, "s")
        local = registry.get("inpaint")
        remote = services.remote_engine("inpaint", server.url, TOKEN)
        request = Request(Task.INPAINT, image, mask, prompt="a red door", steps=args.steps, seed=1, model=services.demo_model("inpaint"))
        remote_request = Request(Task.INPAINT, image, mask, prompt="a red door", steps=args.steps, seed=1)

        messages: list[tuple[dict, float]] = []
        remote.on_message = lambda message, received: messages.append((message, received))

        def run_local():
            hand = HandOver()
            started = time.perf_counter()
            result = local.run(request, hand.on_step, CancelToken())
            wall = time.perf_counter() - started
            return wall, result, hand.close()

        def run_remote():
            messages.clear()
            hand = HandOver()
            started = time.perf_counter()
            result = remote.run(remote_request, hand.on_step, CancelToken())
            wall = time.perf_counter() - started
            return wall, result, hand.close(), list(messages)

        warm_local, warm_remote = run_local(), run_remote()
        report("first_job_local_s", warm_local[0], "s (loads the model)")
        report("first_job_remote_s", warm_remote[0], "s (loads the model on the server)")
        report("results_identical", bool(np.array_equal(warm_local[1].image, warm_remote[1].image)))

        local_walls, remote_walls, server_seconds, local_latency, arrive, server_part, wire_part, decode, frame_bytes = ([] for _ in range(9))
        for _ in range(args.repeats):
            wall, result, done = run_local()
            local_walls.append(wall)
            local_latency += [ready - reported for reported, ready in done]
            wall, result, done, seen = run_remote()
            remote_walls.append(wall)
            server_seconds.append(result.info["server_seconds"])
            steps = [(m, at) for m, at in seen if m.get("type") == "step" and not m.get("stage")]
            arrive += [at - m["t"] for m, at in steps]
            server_part += [m["sent"] - m["t"] for m, _ in steps]
            wire_part += [at - m["sent"] for m, at in steps]
            frame_bytes += [len(m.get("frame", "")) * 3 / 4 for m, _ in steps]
            decode += [ready - reported for reported, ready in done]  # on_step here → picture decoded here

        ms = 1000.0
        report("local_job_s", statistics.median(local_walls), "s (median)")
        report("remote_job_s", statistics.median(remote_walls), "s (median)")
        report("remote_server_engine_s", statistics.median(server_seconds), "s (the engine's own time on the server)")
        report("remote_over_local", statistics.median(remote_walls) / statistics.median(local_walls))
        report("remote_overhead_s", statistics.median(remote_walls) - statistics.median(local_walls), "s per job")
        report("remote_overhead_outside_engine_s", statistics.median(r - s for r, s in zip(remote_walls, server_seconds)), "s per job")
        report("preview_latency_ms", statistics.median(arrive) * ms, f"ms median, server step end → line here (p90 {percentile(arrive, 0.9) * ms:.1f})")
        report("preview_server_part_ms", statistics.median(server_part) * ms, "ms (render + JPEG on the server)")
        report("preview_transport_ms", statistics.median(wire_part) * ms, "ms (Ray proxy, HTTP, socket)")
        report("preview_decode_ms", statistics.median(decode) * ms, "ms (step here → JPEG decoded, on a hand-over thread)")
        report("preview_total_remote_ms", (statistics.median(arrive) + statistics.median(decode)) * ms, "ms (step on the server → picture here)")
        report("preview_local_ms", statistics.median(local_latency) * ms, "ms (in-process: step → picture rendered)")
        report("preview_remote_over_local", (statistics.median(arrive) + statistics.median(decode)) / statistics.median(local_latency))
        report("frame_kb", statistics.median(frame_bytes) / 1024, "kB per JPEG frame")
    shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
