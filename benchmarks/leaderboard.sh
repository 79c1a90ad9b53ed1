#!/usr/bin/env bash
# Fill MODEL_CARDS.md's leaderboard: run every zoo-eval protocol that a shipped encoder has no report
# for yet, writing into runs/NAME/ (eval-mlp.json, eval-cluster.json, eval-finetune.json,
# eval-stage2.json, eval-stage3.json), then regenerate MODEL_CARDS.md. Rerun it after an interruption:
# reports already written are skipped.
#
#   benchmarks/leaderboard.sh                      # every shipped encoder
#   benchmarks/leaderboard.sh simclr_resnet18w025_cifar10 vicreg_resnet18w025_cifar10
set -u
cd "$(dirname "$0")/.."
DATA=${DATA:-cifar10-jpeg:../shared/data/cifar10-train-jpeg.tar.gz}
names=("$@")
[ ${#names[@]} -gt 0 ] || mapfile -t names < <(python -c "import zoo; print('\n'.join(zoo.list_models()))" 2>/dev/null)
for name in "${names[@]}"; do
  dir=runs/$name
  [ -d "$dir" ] || { echo "$(date +%T) $name: no $dir, skipped"; continue; }
  for protocol in mlp cluster finetune; do
    [ -f "$dir/eval-$protocol.json" ] && continue
    echo "$(date +%T) $name: $protocol"
    zoo-eval "$name" --data "$DATA" --protocol "$protocol" --out "$dir/eval-$protocol.json" \
      || echo "$(date +%T) $name: $protocol failed (exit $?)"
  done
  for layer in stage2 stage3; do
    [ -f "$dir/eval-$layer.json" ] && continue
    echo "$(date +%T) $name: --layer $layer"
    zoo-eval "$name" --data "$DATA" --layer "$layer" --out "$dir/eval-$layer.json" \
      || echo "$(date +%T) $name: $layer failed (exit $?)"
  done
done
python -m export.model_card
