#!/usr/bin/env bash
# The GPU table of benchmarks/RESULTS.md in one prepared run (about ten minutes on an H200): each line is
# one `python -m benchmarks` with its own time limit, writing its JSON into $OUT as it goes, so a run
# stopped at its limit still returns what it measured. Random weights at the real SD 1.5-inpainting
# and SDXL-inpainting layouts (speed does not depend on the weights).
#
#   OUT=/some/folder bash benchmarks/gpu_table.sh
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/sandcastle-gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
run() {  # name, seconds, arguments…
  local name=$1 limit=$2
  shift 2
  echo "== $name: python -m benchmarks $*"
  timeout "$limit" python3 -m benchmarks "$@" --json "$OUT/$name.json" 2>&1 | grep -v -e "it/s]" -e "Warning" | tee "$OUT/$name.log"
}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$OUT/gpu.txt" 2>&1
run sd15-fp16 130 --device cuda --size sd15 --dtype float16 --steps 25 --repeats 3 --skip gui
run sd15-bf16 80 --device cuda --size sd15 --dtype bfloat16 --steps 25 --repeats 3 --skip gui,slicing,cancel
run sdxl-fp16 140 --device cuda --size sdxl --dtype float16 --steps 25 --repeats 3 --skip gui,slicing
run sdxl-8gb 100 --device cuda --size sdxl --dtype float16 --steps 10 --repeats 1 --vram-limit-gb 8 --skip gui,slicing,cancel
run sd15-compiled 130 --device cuda --size sd15 --dtype float16 --steps 25 --repeats 3 --compile --skip gui,slicing,cancel
# Today's models (issue 23): peak VRAM and steps/s per memory mode at the real structure, 1024², in
# bfloat16; the 12 and 16 GB cards are stood in for by capping PyTorch's allocations.
dit() {  # name, seconds, arguments…
  local name=$1 limit=$2
  shift 2
  echo "== $name: python -m benchmarks.dit_memory $*"
  timeout "$limit" python3 -m benchmarks.dit_memory --size real --device cuda --side 1024 --json "$OUT/$name.json" "$@" 2>&1 | grep -v Warning | tee "$OUT/$name.log"
}
dit klein-whole 240 --kind flux2-klein --steps 4 --modes off,balanced,quantized,lowest --folder /tmp/sandcastle-klein
dit klein-16gb 120 --kind flux2-klein --steps 4 --modes auto,balanced,lowest --vram-gb 16 --folder /tmp/sandcastle-klein
dit klein-12gb 120 --kind flux2-klein --steps 4 --modes auto,quantized,lowest --vram-gb 12 --folder /tmp/sandcastle-klein
dit qwen-24gb 300 --kind qwen-edit --steps 4 --modes auto,lowest --vram-gb 24
