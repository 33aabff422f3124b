#!/usr/bin/env bash
# The six-system comparison on the `full` synthetic benchmark, sized for 2 CPU cores (about 1.5 hours;
# docs/compare.md): fold 0 of 5, 2 epochs per model. Two `cvfer compare` processes train half of the models
# each (one core each) into the same folder; a last one reuses every trained fold, times all models on an
# otherwise idle machine and writes the one table. Re-running resumes. Usage: benchmarks/run_compare.sh [WORK_DIR]
set -euo pipefail
work="${1:-.}"
data="$work/data/synth-full"
out="$work/runs/compare-full"
common=(--data "$data" --folds 1 --epochs 2 --threads 1 --cache-dir "$work/data/cache" --out "$out")
if [ ! -f "$data/manifest.csv" ]; then
    cvfer synth "$data" --preset full --folds 5 --workers 2
fi
cvfer compare --models cnn-lstm,mic,mic-mi,mic-resnet6 "${common[@]}" &
first=$!
cvfer compare --models ceflnet,tfen "${common[@]}" &
second=$!
wait "$first" "$second"
cvfer compare --models mic,mic-mi,mic-resnet6,cnn-lstm,tfen,ceflnet "${common[@]}"
