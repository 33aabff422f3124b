#!/usr/bin/env bash
# The real-face development set (docs/datasets.md, "The real-face development set"): CK+ neutral/peak
# crops from a public GitHub mirror, turned into 327 moving onset→apex clips of 118 subjects by
# `cvfer prepare --dataset pairs`. Nothing of it is committed: it lands in the git-ignored data/.
# Usage: benchmarks/build_real_dev_set.sh [SOURCE [OUT]]   SOURCE: a clone or bare git dir of the mirror
#        (default: clone https://github.com/Amoxil/EmoRecRicci into data/sources/EmoRecRicci.git);
#        OUT: the prepared set (default data/real/ckplus-pairs; its stills go to OUT.sources/).
set -euo pipefail
cd "$(dirname "$0")/.."
commit=918290712e4355d5c61581836ee919606ee70648   # the mirror's commit the figures in docs/results.md used
source="${1:-data/sources/EmoRecRicci.git}"
out="${2:-data/real/ckplus-pairs}"
stills="$out.sources"
cvfer="${CVFER:-.venv/bin/cvfer}"
if [ ! -e "$source" ]; then
    git clone --bare --quiet https://github.com/Amoxil/EmoRecRicci "$source"
fi
git_dir="$source"
[ -d "$source/.git" ] && git_dir="$source/.git"
rm -rf "$stills"
mkdir -p "$stills"
git --git-dir="$git_dir" archive "$commit" CK+ | tar -x -C "$stills"
"$cvfer" prepare "$stills" --dataset pairs --out "$out" --no-crop --workers 2
