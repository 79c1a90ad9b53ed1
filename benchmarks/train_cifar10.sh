#!/usr/bin/env bash
# Train and evaluate zoo encoders on the CIFAR-10 JPEG archive, one run after another.
# Each run resumes from its last checkpoint, so rerunning this script after an
# interruption continues where it stopped; finished runs (with eval.json) are skipped.
#
#   benchmarks/train_cifar10.sh counting moco dim            # recipes trainers/configs/NAME_cifar10.yaml
#   benchmarks/train_cifar10.sh "rotation_set-8:rotation:--set method_config.num_rotations=8"
#
# An entry is RECIPE or OUT_NAME:RECIPE:EXTRA_ARGS; the run folder is $RUNS/OUT_NAME
# ($RUNS/RECIPE_resnet18w025_cifar10 for a plain recipe name). RUNS defaults to runs/; point it
# outside the repository for runs longer than a session (copy the folder into runs/ when done,
# without checkpoints/ and tensorboard/, which .gitignore keeps out anyway).
set -u
cd "$(dirname "$0")/.."
RUNS=${RUNS:-runs}
for entry in "$@"; do
  IFS=: read -r out recipe extra <<<"$entry"
  if [ -z "${recipe:-}" ]; then recipe=$out; out=${recipe}_resnet18w025_cifar10; fi
  run=$RUNS/$out
  if [ -f "$run/eval.json" ]; then echo "$(date +%T) $out: already evaluated, skipped"; continue; fi
  echo "$(date +%T) $out: training ($recipe $extra)"
  # shellcheck disable=SC2086
  zoo-train "$recipe" --config "trainers/configs/${recipe}_cifar10.yaml" --out "$run" $extra \
    || { echo "$(date +%T) $out: training stopped (exit $?)"; continue; }
  echo "$(date +%T) $out: evaluating"
  zoo-eval "$run" --protocol knn,linear || echo "$(date +%T) $out: evaluation failed (exit $?)"
done
echo "$(date +%T) queue done"
