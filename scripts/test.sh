#!/usr/bin/env bash
# Install (idempotent) and run the whole test suite.
#   bash scripts/test.sh            # extra args go to pytest, e.g. -k postgres
# PostgreSQL tests start their own private server from /usr/lib/postgresql/*/bin;
# without those binaries they are skipped, unless CI is set (then they fail).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY="${PYTHON:-python3}"

bash scripts/install.sh --dev

# pytest's exit code is passed on as is (5 = no tests collected is a failure too).
exec "$PY" -m pytest -q tests "$@"
