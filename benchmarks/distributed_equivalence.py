"""One device against two: per registered method, how far the loss and the gradients on 2
logical CPU devices (MirroredStrategy, the global batch split in halves) are from those on one
device for the same global batch and the same weights, and what a 2-device step costs.

Run from the repository root (about 1 minute per method on 2 busy cores):

    python benchmarks/distributed_equivalence.py                  # every method of zoo.list_methods()
    python benchmarks/distributed_equivalence.py --methods simclr,rotation --steps 5

Per method it measures, on `--batch` source images of the `shapes` data (width `--width`):

- `sync_bn`: loss and gradients with synchronised batch norm, in float32 (what training runs)
  and in float64 (`keras.config.set_floatx`; the methods' losses still cast to float32). The
  float64 numbers say whether a float32 difference is round-off or a real one.
- `per_replica_bn`: the same without synchronised batch norm: different by design (each
  replica normalises with its own half of the batch), shown for scale.
- `loss_abs` = |loss_1 - loss_2|, `loss_rel` = loss_abs / |loss_1|; `grad_rel` = the largest,
  over trainable variables, of max|g_1 - g_2| / max|g_1| (the harness's measure), `grad_abs`
  = the largest max|g_1 - g_2|.
- `step_ms`: median time of a compiled `fit` step (sync BN, float32) on 1 device and on 2
  logical devices, after `--warmup` steps. The 2 logical devices share the same CPU cores, so
  this measures the cost of the replication (collectives, split batch), not a speed-up.

Writes --out (benchmarks/results/distributed_equivalence.json) and prints a markdown table.
"""
import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import tensorflow as tf  # noqa: E402

# Two logical CPU devices, before TensorFlow initialises its devices.
tf.config.set_logical_device_configuration(tf.config.list_physical_devices("CPU")[0],
                                           [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402
import numpy as np  # noqa: E402

import zoo  # noqa: E402
from zoo.distribute import global_loss_and_gradients  # noqa: E402
from zoo.optimizers import make_optimizer  # noqa: E402


def _views(method, batch):
    data = zoo.data.load_arrays("shapes", "train")
    return method.make_views(tf.constant(data.images[:batch]), tf.constant(data.labels[:batch]), tf.constant([3, 4]))


def _create(name, width, **overrides):
    keras.utils.set_random_seed(1)
    return zoo.create(name, backbone="resnet18", width=width, **overrides)


def compare(name, strategy, width, batch, sync_bn, floatx):
    """Loss and gradient differences, 1 device vs `strategy`, for one configuration."""
    keras.config.set_floatx(floatx)
    keras.config.set_dtype_policy(floatx)  # (the policy, once made, no longer follows floatx)
    try:
        single = _create(name, width, sync_bn=sync_bn)
        views = _views(single, batch)
        views = {k: tf.cast(v, floatx) if v.dtype.is_floating else v for k, v in views.items()}
        with tf.GradientTape() as tape:
            loss, _ = single.pretext_loss(views, training=True)
        grads = tape.gradient(loss, single.trainable_variables)
        with strategy.scope():
            mirrored = _create(name, width, sync_bn=sync_bn)
        mirrored.set_weights(single.get_weights())
        dist_loss, dist_grads = global_loss_and_gradients(strategy, mirrored, views)
    finally:
        keras.config.set_floatx("float32")
        keras.config.set_dtype_policy("float32")
    loss1, loss2 = float(loss), float(dist_loss)
    grad_rel = grad_abs = 0.0
    for g1, g2 in zip(grads, dist_grads):
        g1 = tf.convert_to_tensor(g1).numpy().astype(np.float64)
        diff = np.abs(g1 - g2.numpy().astype(np.float64)).max()
        grad_abs = max(grad_abs, diff)
        grad_rel = max(grad_rel, diff / max(np.abs(g1).max(), 1e-12))
    return {"loss_1": loss1, "loss_2": loss2, "loss_abs": abs(loss1 - loss2),
            "loss_rel": abs(loss1 - loss2) / max(abs(loss1), 1e-12), "grad_abs": grad_abs, "grad_rel": grad_rel}


def step_time(name, strategy, width, batch, steps, warmup):
    """Median seconds of a compiled fit step (sync BN) under `strategy`, views made once."""
    with strategy.scope():
        method = _create(name, width, sync_bn=True)
        method.compile(optimizer=make_optimizer("sgd", 0.01, momentum=0.9))
    views = _views(method, batch)
    times = []
    timer = keras.callbacks.LambdaCallback(on_train_batch_begin=lambda b, logs: times.append(time.perf_counter()))
    method.fit(tf.data.Dataset.from_tensors(views).repeat(), steps_per_epoch=warmup + steps + 1, epochs=1,
               verbose=0, callbacks=[timer])
    return statistics.median(np.diff(times[warmup:]))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", help="comma-separated (default: every registered method)")
    p.add_argument("--width", type=float, default=0.125)
    p.add_argument("--batch", type=int, default=16, help="source images of the global batch")
    p.add_argument("--steps", type=int, default=8, help="timed fit steps")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--out", default=str(BENCH_DIR / "results" / "distributed_equivalence.json"))
    args = p.parse_args(argv)
    methods = args.methods.split(",") if args.methods else zoo.list_methods()
    two = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])  # one per process: collectives share keys
    one = tf.distribute.get_strategy()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    results = {"machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                           "load_1min_at_start": load, "tensorflow": tf.__version__, "keras": keras.__version__},
               "settings": {"width": args.width, "batch": args.batch, "steps": args.steps, "warmup": args.warmup},
               "methods": {}}
    for name in methods:
        started = time.time()
        row = {"sync_bn_float32": compare(name, two, args.width, args.batch, True, "float32"),
               "sync_bn_float64": compare(name, two, args.width, args.batch, True, "float64"),
               "per_replica_bn_float32": compare(name, two, args.width, args.batch, False, "float32")}
        row["step_ms_1_device"] = 1000 * step_time(name, one, args.width, args.batch, args.steps, args.warmup)
        row["step_ms_2_devices"] = 1000 * step_time(name, two, args.width, args.batch, args.steps, args.warmup)
        results["methods"][name] = row
        s32, s64, per = row["sync_bn_float32"], row["sync_bn_float64"], row["per_replica_bn_float32"]
        print(f"{name}: loss {s32['loss_abs']:.1e} / grad {s32['grad_rel']:.1e} (float64: {s64['loss_abs']:.1e} / "
              f"{s64['grad_rel']:.1e}; per-replica BN: {per['loss_abs']:.1e} / {per['grad_rel']:.1e}); step "
              f"{row['step_ms_1_device']:.0f} ms on 1 device, {row['step_ms_2_devices']:.0f} ms on 2 "
              f"({time.time() - started:.0f} s)", flush=True)
    results["machine"]["load_1min_at_end"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1)
    print(f"\nwrote {args.out}\n")
    print("| method | max abs loss diff | max rel grad diff | float64: loss / grad | per-replica BN: loss / grad "
          "| step 1 device (ms) | step 2 devices (ms) | ratio |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, row in results["methods"].items():
        s32, s64, per = row["sync_bn_float32"], row["sync_bn_float64"], row["per_replica_bn_float32"]
        print(f"| {name} | {s32['loss_abs']:.1e} | {s32['grad_rel']:.1e} | {s64['loss_abs']:.0e} / {s64['grad_rel']:.0e} "
              f"| {per['loss_abs']:.1e} / {per['grad_rel']:.1e} | {row['step_ms_1_device']:.0f} "
              f"| {row['step_ms_2_devices']:.0f} | {row['step_ms_2_devices'] / row['step_ms_1_device']:.2f} |")
    return results


if __name__ == "__main__":
    main()
