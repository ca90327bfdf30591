#!/usr/bin/env bash
# Set up, generate the demo dataset (24 patients, fMRIPrep-style derivatives, a generated TemplateFlow
# home) and run the participant and group levels on it, offline. Outputs: demo/output.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
DEMO=${DEMO_DIR:-demo}
case "$DEMO" in /*) ;; *) DEMO="$PWD/$DEMO" ;; esac
export NIPYPE_NO_ET=1 TEMPLATEFLOW_AUTOUPDATE=0 TEMPLATEFLOW_HOME="$DEMO/templateflow"
NPROCS=${NPROCS:-$(nproc 2>/dev/null || echo 2)}
if [ ! -f "$DEMO/bids/participants.tsv" ]; then
    .venv/bin/python -m bids_ketamine_fc.demo "$DEMO"
fi
time .venv/bin/bids_ketamine_fc "$DEMO/bids" "$DEMO/output" participant -w "$DEMO/work" --nprocs "$NPROCS"
time .venv/bin/bids_ketamine_fc "$DEMO/bids" "$DEMO/output" group -w "$DEMO/work" --nprocs "$NPROCS" \
    --random-seed 1 "$@"
echo "Demo done: open $DEMO/output/sub-01.html and $DEMO/output/group/group.html"
