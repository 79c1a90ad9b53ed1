#!/usr/bin/env bash
# Ship a finished (trained and evaluated) run as a packaged encoder: copy its config, logs and
# eval.json into runs/NAME (paths rewritten to runs/), export it, register it with the package
# and regenerate MODEL_CARDS.md. Add its row to the README table and commit by hand.
#
#   benchmarks/ship_run.sh /work/ssl_runs/vicreg_resnet18w025_cifar10
set -eu
cd "$(dirname "$0")/.."
src=${1%/}
name=$(basename "$src")
dst=runs/$name
[ -f "$src/eval.json" ] || { echo "error: $src/eval.json is missing: evaluate the run first (zoo-eval $src --protocol knn,linear)" >&2; exit 2; }
[ -d "$src/checkpoints" ] || { echo "error: $src/checkpoints is missing: the export reads the last checkpoint" >&2; exit 2; }
mkdir -p "$dst"
for f in config.yaml train.log metrics.jsonl eval.json; do
  sed "s#$(dirname "$(realpath "$src")")/#runs/#g" "$src/$f" > "$dst/$f"
done
# The export reads the checkpoints through runs/NAME so that the card's commands name runs/NAME.
ln -sfn "$(realpath "$src/checkpoints")" "$dst/checkpoints"
trap 'rm -f "$dst/checkpoints"' EXIT
zoo-export "$dst" --name "$name" --to published --overwrite
python -m export.publish "published/$name"
python -m export.model_card
