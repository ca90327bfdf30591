#!/usr/bin/env bash
# Set up and run the test suite (offline). pytest's exit code 5 (no test collected) is a failure.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh || exit 1
export NIPYPE_NO_ET=1 TEMPLATEFLOW_AUTOUPDATE=0
.venv/bin/python -m ruff check bids_ketamine_fc tests benchmarks || exit 1
.venv/bin/python -m pytest -q "$@"
status=$?
if [ "$status" -eq 5 ]; then
    echo "pytest collected no test: failing" >&2
    exit 1
fi
exit "$status"
