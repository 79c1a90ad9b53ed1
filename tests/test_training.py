"""zoo-train end to end on tiny settings: resumability after SIGTERM and SIGKILL gives the same
weights as an uninterrupted run, and the CLI's errors name the bad input."""
import glob
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml

from trainers import recipes
from trainers.callbacks import MetricsFile, latest_checkpoint
from trainers.train import prepare_run_dir

DATA = "shapes?n=600"  # 500 train / 100 val images
ARGS = ["simclr", "--data", DATA, "--epochs", "2", "--batch-size", "50", "--width", "0.125",
        "--set", "checkpoint_every_steps=3", "--set", "knn_every_epochs=1"]
STEPS = 2 * (500 // 50)


def _train_cmd(out):
    return [sys.executable, "-m", "trainers.train", *ARGS, "--out", str(out)]


def _env():
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")


def _wait_for_checkpoint(proc, out, min_step, timeout=180):
    deadline = time.time() + timeout
    while time.time() < deadline:
        _, step = latest_checkpoint(os.path.join(out, "checkpoints"))
        if step >= min_step:
            return step
        assert proc.poll() is None, proc.communicate()[0][-3000:]
        time.sleep(0.2)
    raise AssertionError(f"no checkpoint >= {min_step} after {timeout} s")


def _final_weights(out):
    import h5py
    path, step = latest_checkpoint(os.path.join(out, "checkpoints"))
    with h5py.File(path) as f:
        arrays = []
        f.visititems(lambda name, obj: arrays.append((name, obj[()])) if hasattr(obj, "shape") else None)
    return step, dict(arrays)


def test_interrupted_run_resumes_to_the_same_weights(tmp_path):
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    done = subprocess.run(_train_cmd(straight), env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    # SIGTERM: a checkpoint at the current step, exit status 143
    proc = subprocess.Popen(_train_cmd(interrupted), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    _wait_for_checkpoint(proc, interrupted, 3)
    proc.send_signal(signal.SIGTERM)
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode == 143, output[-3000:]
    assert "Rerun the same command to resume" in output
    _, term_step = latest_checkpoint(os.path.join(interrupted, "checkpoints"))
    assert 3 <= term_step < STEPS

    # SIGKILL after a later checkpoint: at most checkpoint_every_steps steps are lost
    proc = subprocess.Popen(_train_cmd(interrupted), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    killed_at = _wait_for_checkpoint(proc, interrupted, term_step + 4)
    proc.kill()
    proc.communicate(timeout=60)
    assert killed_at < STEPS

    resumed = subprocess.run(_train_cmd(interrupted), env=_env(), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert f"resumed from" in resumed.stdout

    step_a, weights_a = _final_weights(straight)
    step_b, weights_b = _final_weights(interrupted)
    assert step_a == step_b == STEPS
    assert weights_a.keys() == weights_b.keys()
    for name in weights_a:
        np.testing.assert_allclose(weights_a[name], weights_b[name], rtol=1e-4, atol=1e-5, err_msg=name)

    # the run folder: config, log, per-epoch metrics with the kNN monitor, TensorBoard events
    rows = [json.loads(line) for line in open(straight / "metrics.jsonl")]
    assert [r["epoch"] for r in rows] == [1, 2]
    # resumed runs rewrite the rows of the epochs they train again: no epoch twice (a row can be
    # missing: SIGKILL between an epoch's last checkpoint and its row loses that row)
    epochs = [json.loads(line)["epoch"] for line in open(interrupted / "metrics.jsonl")]
    assert epochs == sorted(set(epochs)) and epochs[-1] == 2, epochs
    assert all(0.0 <= r["val_knn_top1"] <= 1.0 for r in rows)
    # the collapse monitors, every epoch: std x sqrt(D) in (0, 1.5), effective rank in [1, D]
    assert all(0.0 < r["embedding_std_ratio"] < 1.5 and 1.0 <= r["effective_rank"] <= 64 for r in rows)
    assert all(r["embedding_std"] == pytest.approx(r["embedding_std_ratio"] / 8.0) for r in rows)  # D = 64
    assert glob.glob(str(straight / "tensorboard" / "**" / "events.*"), recursive=True)
    assert "kNN top-1 on val" in open(straight / "train.log").read()
    with open(straight / "config.yaml") as f:
        assert yaml.safe_load(f)["method_config"]["width"] == 0.125

    # rerunning a finished run does nothing
    again = subprocess.run(_train_cmd(straight), env=_env(), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "nothing to do" in again.stdout


def test_metrics_file_drops_the_rows_of_epochs_that_will_be_trained_again(tmp_path):
    path = tmp_path / "metrics.jsonl"
    rows = "".join(json.dumps({"epoch": e, "step": 10 * e, "loss": 1.0 / e}) + "\n" for e in (1, 2, 3))
    path.write_text(rows)
    MetricsFile(str(path), completed_epochs=3)  # resuming after the last row: the file is untouched
    assert path.read_text() == rows
    MetricsFile(str(path), completed_epochs=2)  # restarted from a checkpoint inside epoch 3
    assert [json.loads(line)["epoch"] for line in path.read_text().splitlines()] == [1, 2]
    MetricsFile(str(path), completed_epochs=0)  # trained again from scratch in the same folder
    assert path.read_text() == ""


def test_collapse_monitor_warns_naming_the_epoch():
    import keras
    from trainers.callbacks import CollapseMonitor

    class Constant(keras.Model):  # an encoder that maps every image to the same features
        def __init__(self):
            super().__init__()
            self.encoder = keras.Sequential([keras.layers.GlobalAveragePooling2D(),
                                             keras.layers.Dense(16, kernel_initializer="zeros", bias_initializer="ones")])

    images = np.random.default_rng(0).integers(0, 256, (40, 8, 8, 3), dtype=np.uint8)
    warnings, infos, logs = [], [], {}
    monitor = CollapseMonitor(images, log=infos.append, warn=warnings.append)
    monitor.set_model(Constant())
    monitor.on_epoch_end(2, logs)
    assert len(warnings) == 1 and "epoch 3" in warnings[0] and "collapsed" in warnings[0] and not infos
    assert logs["embedding_std"] < 1e-6 and logs["effective_rank"] == 0.0

    healthy = keras.Sequential([keras.layers.Flatten(), keras.layers.Dense(16)])
    monitor.model.encoder = healthy
    monitor.on_epoch_end(3, logs)
    assert len(warnings) == 1 and "epoch 4" in infos[0] and logs["embedding_std_ratio"] > 0.1


def test_run_folder_with_another_recipe_is_refused(tmp_path):
    recipe = recipes.load_recipe("simclr")
    prepare_run_dir(str(tmp_path / "run"), recipe)
    other = dict(recipe, batch_size=recipe["batch_size"] * 2)
    with pytest.raises(SystemExit, match="different recipe.*batch_size"):
        prepare_run_dir(str(tmp_path / "run"), other)
    longer = dict(recipe, epochs=recipe["epochs"] + 5)  # extending a run is allowed
    prepare_run_dir(str(tmp_path / "run"), longer)
    in_float32 = dict(longer, mixed_precision=not longer.get("mixed_precision", False))  # so is changing the precision
    prepare_run_dir(str(tmp_path / "run"), in_float32)
    assert recipes.load_recipe("simclr", str(tmp_path / "run" / "config.yaml"))["mixed_precision"] == \
        in_float32["mixed_precision"]
    (tmp_path / "stuff").mkdir()
    (tmp_path / "stuff" / "notes.txt").write_text("x")
    with pytest.raises(SystemExit, match="not a zoo run folder"):
        prepare_run_dir(str(tmp_path / "stuff"), recipe)
    with pytest.raises(SystemExit, match="--resume given"):
        prepare_run_dir(str(tmp_path / "new"), recipe, resume=True)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "trainers.train", *args], env=_env(), capture_output=True,
                          text=True, timeout=300)


def test_cli_errors_name_the_input_and_the_fix(tmp_path):
    unknown = _cli("simclrr", "--out", str(tmp_path / "a"))
    assert unknown.returncode != 0 and "Did you mean 'simclr'" in unknown.stderr
    missing = _cli("simclr", "--data", "cifar10-jpeg:/nonexistent/c.tar.gz", "--out", str(tmp_path / "b"))
    assert missing.returncode != 0 and "/nonexistent/c.tar.gz" in missing.stderr
    bad_set = _cli("simclr", "--set", "epochs", "--out", str(tmp_path / "c"))
    assert bad_set.returncode != 0 and "key=value" in bad_set.stderr and "Traceback" not in bad_set.stderr


def test_recipes_parse_and_name_their_method():
    import zoo

    for path in glob.glob(os.path.join(recipes.CONFIG_DIR, "*.yaml")):
        # METHOD_DATASET.yaml, or METHOD_VARIANT_DATASET.yaml (e.g. vicreg_flagship_cifar10.yaml)
        with open(path) as f:
            method = yaml.safe_load(f)["method"]
        assert method in zoo.list_methods() and os.path.basename(path).startswith(method + "_"), path
        recipe = recipes.load_recipe(method, path)
        assert recipe["method"] == method and recipe["epochs"] > 0
    with pytest.raises(ValueError, match="not 'rotation'"):
        recipes.load_recipe("rotation", os.path.join(recipes.CONFIG_DIR, "simclr_cifar10.yaml"))


def test_mirrored_strategy_on_two_logical_cpus_trains_and_resumes(tmp_path):
    out = tmp_path / "mirrored"
    cmd = [sys.executable, "-m", "trainers.train", *ARGS, "--strategy", "mirrored", "--cpu-devices", "2",
           "--out", str(out)]
    first = subprocess.run([*cmd, "--epochs", "1"], env=_env(), capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "MirroredStrategy: 2 replicas, 25 images each" in first.stdout
    second = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)  # --epochs 2
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "resumed from" in second.stdout
    assert latest_checkpoint(os.path.join(out, "checkpoints"))[1] == STEPS
    rows = [json.loads(line) for line in open(out / "metrics.jsonl")]
    assert [r["epoch"] for r in rows] == [1, 2] and all(0 <= r["val_knn_top1"] <= 1 for r in rows)
    odd = subprocess.run([*cmd[:-2], "--out", str(tmp_path / "odd"), "--batch-size", "45"], env=_env(),
                         capture_output=True, text=True, timeout=600)
    assert odd.returncode != 0 and "does not split evenly over 2 replicas" in odd.stderr


def test_large_batch_and_speed_flags_reach_the_recipe():
    from trainers.train import parse_args, recipe_from_args
    recipe = recipe_from_args(parse_args(["simclr", "--sync-bn", "--accumulate-steps", "4", "--lr-scaling", "linear",
                                          "--jit-compile", "--mixed-precision"]))
    assert recipe["method_config"]["sync_bn"] is True and recipe["accumulate_steps"] == 4
    assert recipe["optimizer"]["lr_scaling"] == "linear"
    assert recipe["jit_compile"] is True and recipe["mixed_precision"] is True
    plain = recipe_from_args(parse_args(["simclr"]))  # no flag, no field: old run folders still resume
    assert not {"accumulate_steps", "jit_compile", "mixed_precision"} & set(plain)
    with pytest.raises(ValueError, match="accumulate_steps"):
        recipe_from_args(parse_args(["simclr", "--accumulate-steps", "0"]))


@pytest.mark.parametrize("rule, peak", [("linear", 0.3 * 512 / 256), ("sqrt", 0.3 * 512 ** 0.5), ("none", 0.3)])
def test_compile_method_scales_the_learning_rate_with_the_update_batch(rule, peak):
    import zoo
    from trainers.train import compile_method
    recipe = recipes.load_recipe("rotation")
    recipe.update(batch_size=256, accumulate_steps=2, epochs=2, jit_compile=True)  # update batch 512
    recipe["optimizer"].update(name="lars", learning_rate=0.3, lr_scaling=rule, warmup_epochs=1)
    method = compile_method(zoo.create("rotation", width=0.125), recipe, steps_per_epoch=10)
    schedule = method.optimizer._learning_rate
    assert schedule.peak == pytest.approx(peak) and schedule.total_steps == 20 and schedule.warmup_steps == 10
    assert method.optimizer.gradient_accumulation_steps == 2 and method.jit_compile is True


def test_checkpointer_with_accumulation_saves_and_stops_only_after_whole_accumulations(tmp_path):
    """accumulate_steps=2: checkpoints at steps 2 and 4 (not after the 5th batch, mid-update), and
    a stop requested after batch 5 of 8 waits for batch 6; the step counts batches, not updates."""
    import keras
    import tensorflow as tf
    from trainers.callbacks import Checkpointer
    from zoo.optimizers import make_optimizer
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer=make_optimizer("sgd", 0.1, accumulate_steps=2), loss="mse")
    data = tf.data.Dataset.from_tensor_slices((np.ones((8, 2, 3), "float32"), np.ones((8, 2, 1), "float32")))
    checkpointer = Checkpointer(str(tmp_path), every_steps=1, keep=10, accumulate_steps=2, log=lambda *_: None)
    model.fit(data.take(5), epochs=1, verbose=0, callbacks=[checkpointer])
    assert sorted(os.listdir(tmp_path)) == ["step-00000002.weights.h5", "step-00000004.weights.h5"]
    assert checkpointer.step() == 5 and int(model.optimizer.iterations.numpy()) == 2

    resumed = Checkpointer(str(tmp_path), every_steps=0, accumulate_steps=2, log=lambda *_: None,
                           restore_from=str(tmp_path / "step-00000004.weights.h5"))
    stop_after = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: resumed.request_stop() if batch == 0 else None)
    model.fit(data.skip(4), epochs=1, verbose=0, callbacks=[resumed, stop_after])  # batches 5..8
    assert resumed.stopped and resumed.step() == 6
    assert sorted(os.listdir(tmp_path))[-1] == "step-00000006.weights.h5"


def test_train_with_mixed_precision_and_accumulation_restores_the_dtype_policy(tmp_path):
    import keras
    from trainers.train import train
    recipe = recipes.load_recipe("rotation")
    recipe.update(data="shapes?n=120", epochs=1, batch_size=20, accumulate_steps=2, mixed_precision=True,
                  knn_every_epochs=0, checkpoint_every_steps=2)
    recipe["method_config"]["width"] = 0.125
    final = train(recipe, str(tmp_path / "run"), verbose=0)
    assert keras.config.dtype_policy().name == "float32"
    assert final.endswith("step-00000005.weights.h5") and os.path.exists(final)
    log = open(tmp_path / "run" / "train.log").read()
    assert "mixed precision: mixed_bfloat16" in log and "one update per 2 batches of 20" in log
    row = json.loads(open(tmp_path / "run" / "metrics.jsonl").read().splitlines()[-1])
    assert np.isfinite(row["loss"])


def test_jit_compile_is_refused_with_several_replicas(tmp_path, two_device_strategy):
    from trainers.train import train
    recipe = recipes.load_recipe("rotation")
    recipe.update(data="shapes?n=120", epochs=1, batch_size=20, jit_compile=True, knn_every_epochs=0)
    recipe["method_config"]["width"] = 0.125
    with pytest.raises(SystemExit, match="--jit-compile needs one device per process"):
        train(recipe, str(tmp_path / "run"), verbose=0, strategy=two_device_strategy)


def test_a_checkpoint_written_in_bfloat16_resumes_in_float32(tmp_path):
    """Mixed precision keeps float32 variables, so the weights file of a bfloat16 run (model and
    optimizer) loads bit-identically into the float32 model that a resumed run on another CPU builds."""
    import keras
    import zoo

    def built(seed):
        keras.utils.set_random_seed(seed)
        method = zoo.create("simclr", width=0.125, image_size=16)
        method.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9))
        method.optimizer.build(method.trainable_variables)
        return method

    path = str(tmp_path / "bf16.weights.h5")
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        trained = built(0)
        trained.save_weights(path)
    finally:
        keras.config.set_dtype_policy("float32")
    resumed = built(1)
    assert not np.array_equal(resumed.encoder.weights[0].numpy(), trained.encoder.weights[0].numpy())
    resumed.load_weights(path)
    saved = trained.weights + trained.optimizer.variables
    loaded = resumed.weights + resumed.optimizer.variables
    assert len(loaded) == len(saved)
    for a, b in zip(saved, loaded):
        assert b.dtype == a.dtype
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_bfloat16_on_a_cpu_without_its_instructions_is_warned(tmp_path):
    from trainers.strategy import slow_bfloat16_warning
    avx2 = tmp_path / "avx2"
    avx2.write_text("processor : 0\nflags : fpu sse2 avx avx2 fma\n")
    bf16 = tmp_path / "bf16"
    bf16.write_text("processor : 0\nflags : fpu sse2 avx avx2 fma avx512f avx512_bf16 amx_bf16\n")
    message = slow_bfloat16_warning("mixed_bfloat16", cpuinfo=str(avx2))
    assert "6.5x slower" in message and "--set mixed_precision=false" in message
    assert slow_bfloat16_warning("mixed_bfloat16", cpuinfo=str(bf16)) is None
    assert slow_bfloat16_warning("float32", cpuinfo=str(avx2)) is None
    assert slow_bfloat16_warning("mixed_bfloat16", cpuinfo=str(tmp_path / "missing")) is None
