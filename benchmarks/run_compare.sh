#!/usr/bin/env bash
# The six-system comparison on the `full` synthetic benchmark, sized for 2 CPU cores (about 3 hours;
# docs/compare.md). Re-running resumes: finished folds are reused. Usage: benchmarks/run_compare.sh [WORK_DIR]
set -euo pipefail
work="${1:-.}"
data="$work/data/synth-full"
if [ ! -f "$data/manifest.csv" ]; then
    cvfer synth "$data" --preset full --folds 5 --workers 2
fi
cvfer compare --data "$data" --models mic,mic-mi,mic-resnet6,cnn-lstm,tfen,ceflnet \
    --folds 2 --epochs 3 --threads 2 --cache-dir "$work/data/cache" --out "$work/runs/compare-full"
