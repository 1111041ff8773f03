#!/usr/bin/env bash
# The README's quick start with only what the README installs: a new virtual environment, torch
# first, then scripts/install.sh without --dev (no test tooling, so nothing the product needs can
# arrive through it), then the embedded sweeps in the smoke mode (LORASWEEP_SMOKE_TEST=1: every
# trial one step, a few evaluation examples), each of which must complete its trials.
#   bash scripts/check-plain-install.sh [VENV]   # VENV: where to create it (default: a temp dir)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
SCRATCH="$(mktemp -d)"
VENV="${1:-$SCRATCH/venv}"
unset PYTHONPATH  # only what the environment holds

python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q "torch==2.13.0"
PYTHON="$VENV/bin/python" bash scripts/install.sh

# GSM8K in its own schema (the files --data-dir takes), written here: no network.
cd "$SCRATCH"
mkdir -p gsm8k
"$VENV/bin/python" - <<'EOF'
import json
for split, n, first in (("train", 260, 0), ("test", 16, 1000)):  # each question its own
    with open(f"gsm8k/{split}.jsonl", "w") as f:
        for i in range(first, first + n):
            a, b = i + 2, i % 5 + 3
            f.write(json.dumps({"question": f"Tom has {a} boxes of {b} pens. How many pens?",
                                "answer": f"{a} * {b} = {a * b}\n#### {a * b}"}) + "\n")
EOF

export LORASWEEP_SMOKE_TEST=1 HF_HUB_OFFLINE=1 OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
LS="$VENV/bin/lorasweep"
run() {  # a sweep must end with exit 0 and every trial completed
    echo "+ lorasweep $*"
    "$LS" "$@" 2>&1 | tee "$SCRATCH/out.txt"
    grep -q "^done: [1-9][0-9]* completed ([0-9]* diverged), 0 failed attempts" "$SCRATCH/out.txt"
}
run run --sweep plain-default                       # the quick start's command
run run --sweep plain-arith --task arith --lrs 1e-3
run run --sweep plain-gsm8k --task gsm8k --model embedded:smollm2 --data-dir gsm8k --lrs 1e-3 \
    --set task.max_new_tokens=16   # the smoke mode caps the evaluation examples, not their length
"$LS" report --sweep plain-default > /dev/null
echo "plain install: the embedded sweeps ran with only what scripts/install.sh installs"
rm -rf "$SCRATCH"
