#!/usr/bin/env bash
# Install Sandcastle with its test extras into .venv-test (created if missing) and run the whole suite.
# torch==2.13.0 is the CPU build where the machine has it (CI does); elsewhere any torch>=2.4 already
# in the virtualenv is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${SANDCASTLE_TEST_VENV:-.venv-test}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
"$VENV/bin/python" -c "import torch" 2>/dev/null || "$VENV/bin/python" -m pip install -q "torch==2.13.0" || "$VENV/bin/python" -m pip install -q "torch>=2.4"
"$VENV/bin/python" -m pip install -q -e ".[test]"
export QT_QPA_PLATFORM=${QT_QPA_PLATFORM:-offscreen}
exec "$VENV/bin/python" -m pytest "$@"
