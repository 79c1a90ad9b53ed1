"""Distributed and large-batch training: MultiWorkerMirroredStrategy with two local worker
processes against one device, the zoo-train multi-worker launcher with a killed worker,
gradient accumulation against one big batch, LARS exclusions on the real networks."""
import json
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

import zoo
from trainers.callbacks import latest_checkpoint
from trainers.launcher import _free_ports
from zoo.optimizers import make_optimizer
from zoo.pipeline import pretext_dataset
from selection import tiny_backbone

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _env(**extra):
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1", **extra)


# --- MultiWorkerMirroredStrategy through the Python API: plain `fit` on 2 worker processes ---

MW_STEPS, MW_BATCH, MW_DATA = 3, 16, "shapes?n=300"

# What a library user writes on each worker (the base class carries the keras#20585 fixes), in
# float64 so that the comparison with one device is not lost in float32 round-off: measured
# here, float32 losses of 1 and 2 replicas part by ~3e-5 after one step and ~1e-3 after two
# (batch norm on 8 images per replica amplifies round-off), float64 ones by ~1e-8.
_RUN = f"""
import keras, zoo
from zoo.optimizers import make_optimizer
from zoo.pipeline import pretext_dataset
keras.config.set_floatx("float64")
keras.config.set_dtype_policy("float64")
with strategy.scope():
    keras.utils.set_random_seed(1)
    method = zoo.create("simclr", backbone="resnet18", width=0.125, sync_bn=True)
    method.compile(optimizer=make_optimizer("sgd", 0.05, momentum=0.9))
data = zoo.data.load_arrays("{MW_DATA}", "train")
losses = []
record = keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: losses.append(logs["loss"]))
method.fit(pretext_dataset(method, data.images, data.labels, {MW_BATCH}, 1), steps_per_epoch={MW_STEPS},
           epochs=1, verbose=0, callbacks=[record])
"""
_WORKER = f"""
import sys, numpy as np, tensorflow as tf
strategy = tf.distribute.MultiWorkerMirroredStrategy()
{_RUN}
np.savez(sys.argv[1], losses=np.array(losses), *method.get_weights())
"""


def test_two_worker_processes_fit_like_one_device(tmp_path):
    """Two workers on 127.0.0.1 (plain `fit` under MultiWorkerMirroredStrategy, sync BN) end
    with bit-identical weights, and their per-step losses (Keras's running mean) and weights
    equal those of one device on the same global batch: losses to 1e-6, weights to 1e-3."""
    cluster = {"worker": [f"127.0.0.1:{p}" for p in _free_ports(2)]}
    procs = [subprocess.Popen([sys.executable, "-c", _WORKER, str(tmp_path / f"worker{i}.npz")], cwd=ROOT,
                              env=_env(TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
    outputs = [p.communicate(timeout=400)[0] for p in procs]
    for p, output in zip(procs, outputs):
        assert p.returncode == 0, output[-3000:]
    workers = [np.load(tmp_path / f"worker{i}.npz") for i in range(2)]
    weights = [[w[f"arr_{j}"] for j in range(len(w.files) - 1)] for w in workers]
    assert len(weights[0]) > 50
    for a, b in zip(*weights):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(workers[0]["losses"], workers[1]["losses"])

    scope = {"strategy": tf.distribute.get_strategy()}
    try:
        exec(_RUN, scope)  # the same run on one device, in this process
    finally:
        keras.config.set_floatx("float32")
        keras.config.set_dtype_policy("float32")
    one_losses, one_weights = np.array(scope["losses"]), scope["method"].get_weights()
    mw_losses = workers[0]["losses"]
    assert len(mw_losses) == MW_STEPS and mw_losses[-1] != mw_losses[0]
    np.testing.assert_allclose(mw_losses, one_losses, rtol=1e-6)
    for a, b in zip(weights[0], one_weights):
        assert a.dtype == b.dtype == np.float64 and np.abs(a - b).max() <= 1e-3 * max(1.0, np.abs(b).max())


# --- zoo-train --strategy multiworker --workers 2: chief-only files, kills, resumption ---

CLI_ARGS = ["simclr", "--data", "shapes?n=300", "--epochs", "2", "--batch-size", "32", "--width", "0.125",
            "--set", "checkpoint_every_steps=3", "--set", "knn_every_epochs=1",
            "--strategy", "multiworker", "--workers", "2"]
CLI_STEPS = 2 * (250 // 32)


def _zoo_train(out):
    return [sys.executable, "-m", "trainers.train", *CLI_ARGS, "--out", str(out)]


def _checkpoint_arrays(out):
    import h5py
    path, step = latest_checkpoint(os.path.join(out, "checkpoints"))
    arrays = {}
    with h5py.File(path) as f:
        f.visititems(lambda name, obj: arrays.__setitem__(name, obj[()]) if hasattr(obj, "shape") else None)
    return step, arrays


def _wait_for_step(proc, out, min_step, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        step = latest_checkpoint(os.path.join(out, "checkpoints"))[1]
        if step >= min_step:
            return step
        assert proc.poll() is None, proc.communicate()[0][-3000:]
        time.sleep(0.2)
    raise AssertionError(f"no checkpoint >= {min_step} after {timeout} s")


@pytest.mark.slow
def test_zoo_train_two_workers_survive_sigterm_and_a_killed_worker(tmp_path):
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    done = subprocess.run(_zoo_train(straight), cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "2 replicas on 2 workers, 16 images each" in done.stdout
    assert "all 2 workers hold identical trainable weights" in done.stdout
    # only the chief writes the run folder; the other worker's scratch folder is gone
    assert sorted(os.listdir(straight)) == ["checkpoints", "config.yaml", "metrics.jsonl", "tensorboard", "train.log"]
    rows = [json.loads(line) for line in open(straight / "metrics.jsonl")]
    assert [r["epoch"] for r in rows] == [1, 2] and all(0 <= r["val_knn_top1"] <= 1 for r in rows)
    worker1_dir = done.stdout.split("worker 1: pid", 1)[1].split("output in ", 1)[1].split()[0]
    assert not os.path.exists(os.path.dirname(worker1_dir))  # the launcher removed the logs of a good run

    # SIGTERM to the launcher: every worker stops after the same step, with a checkpoint
    proc = subprocess.Popen(_zoo_train(interrupted), cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    _wait_for_step(proc, interrupted, 3)
    proc.send_signal(signal.SIGTERM)
    output = proc.communicate(timeout=300)[0]
    assert proc.returncode == 143, output[-3000:]
    assert "Rerun the same command to resume" in output
    term_step = latest_checkpoint(os.path.join(interrupted, "checkpoints"))[1]
    assert 3 <= term_step < CLI_STEPS

    # SIGKILL of worker 1: the launcher stops the chief and says how to resume
    proc = subprocess.Popen(_zoo_train(interrupted), cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    pid = None
    while pid is None:
        line = proc.stdout.readline()
        assert line, "the launcher ended before starting worker 1"
        if line.startswith("worker 1: pid "):
            pid = int(line.split()[3].rstrip(","))
    killed_at = _wait_for_step(proc, interrupted, term_step + 2)
    os.kill(pid, signal.SIGKILL)
    output = proc.communicate(timeout=300)[0]
    assert proc.returncode == 1, output[-3000:]
    assert "worker 1 was killed by signal 9" in output and "Rerun the same command to resume" in output
    assert killed_at < CLI_STEPS

    resumed = subprocess.run(_zoo_train(interrupted), cwd=ROOT, env=_env(), capture_output=True, text=True,
                             timeout=900)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout
    step_a, weights_a = _checkpoint_arrays(straight)
    step_b, weights_b = _checkpoint_arrays(interrupted)
    assert step_a == step_b == CLI_STEPS and weights_a.keys() == weights_b.keys()
    for name in weights_a:
        np.testing.assert_allclose(weights_a[name], weights_b[name], rtol=1e-4, atol=1e-5, err_msg=name)


def test_multiworker_needs_tf_config_or_workers(tmp_path):
    env = {k: v for k, v in _env().items() if k != "TF_CONFIG"}
    run = subprocess.run([sys.executable, "-m", "trainers.train", "simclr", "--strategy", "multiworker",
                          "--out", str(tmp_path / "a")], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode != 0 and "TF_CONFIG" in run.stderr and "--workers 2" in run.stderr
    run = subprocess.run([sys.executable, "-m", "trainers.train", "simclr", "--workers", "2",
                          "--out", str(tmp_path / "b")], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode != 0 and "--strategy multiworker" in run.stderr


# --- gradient accumulation: k batches of B make the update of one batch of kB ---

def _frozen_encoder_rotation():
    """RotNet whose encoder is frozen (Keras runs frozen batch norm in inference mode): the
    trainable part, a linear head, sees no batch statistics, so accumulation must be exact."""
    keras.utils.set_random_seed(1)
    method = zoo.create("rotation", backbone="resnet18", width=0.125)
    method.encoder.trainable = False
    return method


def _four_batches(method):
    data = zoo.data.load_arrays("shapes", "train")
    return [method.make_views(tf.constant(data.images[8 * i:8 * (i + 1)]), tf.constant(data.labels[8 * i:8 * (i + 1)]),
                              tf.constant([1, i])) for i in range(4)]


def _stack(views):
    return tf.data.Dataset.from_tensor_slices({k: tf.stack([v[k] for v in views]) for k in views[0]})


@pytest.mark.parametrize("replicas", [1, 2])
def test_accumulated_batches_give_the_update_of_one_big_batch(replicas, two_device_strategy):
    """2 updates: 4 batches of 8 images with accumulate_steps=2 against 2 batches of 16, with
    momentum and weight decay; on one device and on 2 replicas (Keras's own
    gradient_accumulation_steps fails there: merge_call inside a cond)."""
    method = _frozen_encoder_rotation()
    method.compile(optimizer=make_optimizer("sgd", 0.1, momentum=0.9, weight_decay=5e-4))
    batches = _four_batches(method)
    big = [{k: tf.concat([batches[2 * j][k], batches[2 * j + 1][k]], 0) for k in batches[0]} for j in range(2)]
    initial = [w.copy() for w in method.get_weights()]
    method.fit(_stack(big), epochs=1, verbose=0)
    expected = method.get_weights()

    strategy = two_device_strategy if replicas == 2 else tf.distribute.get_strategy()
    with strategy.scope():
        accumulating = _frozen_encoder_rotation()
        accumulating.compile(optimizer=make_optimizer("sgd", 0.1, momentum=0.9, weight_decay=5e-4, accumulate_steps=2))
    accumulating.set_weights(initial)
    accumulating.fit(_stack(batches[:1]), epochs=1, verbose=0)
    for w, w0 in zip(accumulating.get_weights(), initial):  # no update after 1 of 2 batches
        np.testing.assert_array_equal(w, w0)
    accumulating.fit(_stack(batches[1:]), epochs=1, verbose=0)
    assert int(accumulating.optimizer.iterations.numpy()) == 2  # updates, not batches
    moved = 0
    for w, w_big, w0 in zip(accumulating.get_weights(), expected, initial):
        update = np.abs(w_big - w0).max()
        moved += update > 0
        assert np.abs(w - w_big).max() <= 1e-5 * update + 1e-8
    assert moved == 2  # the head's kernel and bias


def test_lars_leaves_biases_and_batch_norm_alone_on_every_method():
    """LARS (and the recipes' SGD) decay and adapt only kernels: no bias, gamma or beta, on the
    real networks of every method."""
    for name in zoo.list_methods():
        method = zoo.create(name, backbone=tiny_backbone(name), width=0.125)
        optimizer = make_optimizer("lars", 0.1, weight_decay=1e-6)
        optimizer.build(method.trainable_variables)
        for v, decayed, adapted in zip(method.trainable_variables, optimizer._decayed, optimizer._adapted):
            kind = v.path.rsplit("/", 1)[-1]
            assert decayed == adapted == (kind not in ("bias", "gamma", "beta")), (name, v.path)
