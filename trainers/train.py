"""`zoo-train METHOD --data SPEC --epochs N --out DIR`: train a self-supervised method.

The run folder holds config.yaml (the resolved recipe), train.log, metrics.jsonl (one line
per epoch), tensorboard/ and checkpoints/. Rerunning the same command (or `--resume`)
continues from the last checkpoint; SIGTERM / Ctrl-C save a checkpoint before exiting.
"""
import argparse
import logging
import os
import signal
import sys
import time

import yaml

from trainers import recipes

log = logging.getLogger("zoo.train")

# Recipe keys that may change between an interrupted run and its resumption.
_RESUMABLE_CHANGES = {"epochs", "knn_every_epochs", "checkpoint_every_steps"}


def _setup_logging(out):
    log.setLevel(logging.INFO)
    log.handlers.clear()
    fmt = logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S")
    for handler in (logging.StreamHandler(sys.stdout), logging.FileHandler(os.path.join(out, "train.log"))):
        handler.setFormatter(fmt)
        log.addHandler(handler)
    log.propagate = False


def prepare_run_dir(out, recipe, resume=None):
    """Create `out` (writing config.yaml) or check that it holds a run of the same recipe."""
    config_path = os.path.join(out, "config.yaml")
    if os.path.exists(config_path):
        with open(config_path) as f:
            old = yaml.safe_load(f)
        diff = sorted(k for k in set(old) | set(recipe)
                      if old.get(k) != recipe.get(k) and k not in _RESUMABLE_CHANGES)
        if diff:
            raise SystemExit(f"error: {out} holds a run with a different recipe (differs in {diff}). "
                             "Use another --out, or delete that folder to start over.")
        if resume is False:
            raise SystemExit(f"error: {out} already holds a run; rerun without --no-resume to continue it, "
                             "or choose another --out.")
    else:
        if resume:
            raise SystemExit(f"error: --resume given but {out} holds no run (no config.yaml).")
        if os.path.isdir(out) and os.listdir(out):
            raise SystemExit(f"error: {out} exists and is not a zoo run folder; choose another --out.")
    os.makedirs(out, exist_ok=True)
    with open(config_path, "w") as f:
        yaml.safe_dump(recipe, f, sort_keys=False)


def build_method(recipe):
    """The (uncompiled) method of a recipe; eval and export rebuild runs with it."""
    import zoo
    return zoo.create(recipe["method"], **recipe.get("method_config", {}))


def fill_num_examples(recipe, num_examples):
    """Methods with a per-image memory (NPID) size it from the data: write the training-set size
    into the recipe, so the run folder's config rebuilds the same model for eval and export."""
    import dataclasses
    from zoo.registry import get_method
    fields = {f.name for f in dataclasses.fields(get_method(recipe["method"]).Config)}
    config = recipe.setdefault("method_config", {})
    if "num_examples" in fields and not config.get("num_examples"):
        config["num_examples"] = int(num_examples)


def compile_method(method, recipe, steps_per_epoch):
    from zoo.optimizers import make_optimizer
    opt = dict(recipe["optimizer"])
    name = opt.pop("name")
    warmup_epochs = opt.pop("warmup_epochs", 0)
    total = recipe["epochs"] * steps_per_epoch
    optimizer = make_optimizer(name, opt.pop("learning_rate"), warmup_steps=int(warmup_epochs * steps_per_epoch),
                               total_steps=total, **opt)
    method.compile(optimizer=optimizer)
    return method


def make_strategy(name="default", cpu_devices=None):
    """A tf.distribute strategy by name: "default" (one device) or "mirrored" (all GPUs, or
    `cpu_devices` logical CPU devices, e.g. to test data parallelism on a CPU machine).
    Must run before TensorFlow initialises its devices."""
    import tensorflow as tf
    if cpu_devices:
        cpu = tf.config.list_physical_devices("CPU")[0]
        try:
            tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * cpu_devices)
        except RuntimeError as e:
            raise SystemExit(f"error: --cpu-devices {cpu_devices}: TensorFlow's devices are already initialised "
                             f"in this process ({e}); pass it from the command line, not after other TF work.")
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices)
    raise SystemExit(f"error: --strategy {name!r}: choose default or mirrored "
                     "(multi-worker and TPU are not wired into zoo-train yet).")


def train(recipe, out, resume=None, verbose=None, strategy=None):
    """Train `recipe` into the run folder `out`; returns the path of the final checkpoint.
    `strategy`: a tf.distribute strategy (default: the current one); `batch_size` is global."""
    import keras
    import tensorflow as tf
    import zoo
    from trainers.callbacks import Checkpointer, KNNMonitor, MetricsFile, latest_checkpoint
    from zoo.pipeline import pretext_dataset, steps_per_epoch

    strategy = strategy or tf.distribute.get_strategy()
    train_data = zoo.data.load_arrays(recipe["data"], "train")
    val_data = zoo.data.load_arrays(recipe["data"], "val")
    fill_num_examples(recipe, len(train_data.images))
    prepare_run_dir(out, recipe, resume)
    _setup_logging(out)
    ckpt_dir = os.path.join(out, "checkpoints")
    restore, start_step = latest_checkpoint(ckpt_dir)

    bs, epochs = recipe["batch_size"], recipe["epochs"]
    spe = steps_per_epoch(len(train_data.images), bs)
    total = epochs * spe
    log.info(f"{recipe['method']} on {recipe['data']}: {len(train_data.images)} train / "
             f"{len(val_data.images)} val images, batch {bs}, {spe} steps/epoch, {epochs} epochs -> {out}")
    if bs % strategy.num_replicas_in_sync:
        raise SystemExit(f"error: batch size {bs} does not split evenly over {strategy.num_replicas_in_sync} "
                         "replicas; use a multiple of the replica count.")
    keras.utils.set_random_seed(recipe["seed"])
    with strategy.scope():
        method = build_method(recipe)
    subset = method.training_subset(train_data.images)
    train_images, train_labels = train_data.images, train_data.labels
    if subset is not None:
        train_images, train_labels = train_images[subset], train_labels[subset]
        spe = steps_per_epoch(len(train_images), bs)
        total = epochs * spe
        log.info(f"{recipe['method']} trains on {len(train_images)} of the images: {spe} steps/epoch")
    if start_step >= total:
        log.info(f"already trained for {start_step} steps ({epochs} epochs): nothing to do.")
        return restore
    with strategy.scope():
        compile_method(method, recipe, spe)
    if strategy.num_replicas_in_sync > 1:
        log.info(f"{type(strategy).__name__}: {strategy.num_replicas_in_sync} replicas, "
                 f"{bs // strategy.num_replicas_in_sync} images each")
    log.info(f"encoder {method.encoder.name}: {method.encoder.count_params():,} parameters, "
             f"{method.feature_dim}-d features")

    checkpointer = Checkpointer(ckpt_dir, recipe["checkpoint_every_steps"], restore_from=restore, log=log.info)
    callbacks = [checkpointer]
    if recipe["knn_every_epochs"] and len(val_data.images):
        callbacks.append(KNNMonitor(train_data.images, train_data.labels, val_data.images, val_data.labels,
                                    train_data.num_classes, recipe["knn_every_epochs"], last_epoch=epochs,
                                    log=log.info, **recipe["knn"]))
    callbacks += [MetricsFile(os.path.join(out, "metrics.jsonl")),
                  keras.callbacks.TensorBoard(os.path.join(out, "tensorboard"), update_freq=50)]
    previous_handlers = {sig: signal.signal(sig, checkpointer.request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}

    if verbose is None:
        verbose = 1 if sys.stdout.isatty() else 2
    started = time.time()

    def run(begin, end, initial_epoch, last_epoch, steps):
        ds = pretext_dataset(method, train_images, train_labels, bs, epochs, recipe["seed"], begin, end)
        method.fit(ds, initial_epoch=initial_epoch, epochs=last_epoch, steps_per_epoch=steps,
                   callbacks=callbacks, verbose=verbose, shuffle=False)  # the pipeline shuffles
        if checkpointer.stop_requested:
            step = checkpointer.step()
            log.info(f"stopped at step {step}; checkpoint {checkpointer.save(step)}. "
                     "Rerun the same command to resume.")
            raise SystemExit(143)

    epoch, offset = divmod(start_step, spe)
    try:
        if offset:  # finish the interrupted epoch on its own, then run the remaining whole epochs
            run(start_step, (epoch + 1) * spe, epoch, epoch + 1, spe - offset)
            epoch += 1
        if epoch < epochs:
            run(epoch * spe, total, epoch, epochs, spe)
    finally:
        for sig, handler in previous_handlers.items():
            signal.signal(sig, handler)
    final = checkpointer.save(checkpointer.step())
    log.info(f"done: {total} steps in {(time.time() - started) / 60:.1f} min this session; final checkpoint {final}")
    return final


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        prog="zoo-train", description="Train a self-supervised method (see zoo.list_methods()).",
        epilog="Example: zoo-train simclr --data shapes --epochs 5 --width 0.25 --out runs/simclr_shapes")
    p.add_argument("method", nargs="?", help="method name, e.g. simclr or rotation (default: the --config's)")
    p.add_argument("--config", help="recipe YAML (default: trainers/configs/METHOD_cifar10.yaml)")
    p.add_argument("--data", help="data spec: shapes | folder:PATH | cifar10-jpeg:PATH | tfds:NAME")
    p.add_argument("--out", help="run folder (default: runs/METHOD)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float, help="peak learning rate")
    p.add_argument("--backbone", help="resnet18 | resnet34 | resnet50")
    p.add_argument("--width", type=float, help="width multiplier of the backbone")
    p.add_argument("--seed", type=int)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any recipe field, e.g. --set method_config.temperature=0.2")
    p.add_argument("--strategy", default="default", help="default | mirrored (all GPUs, or --cpu-devices)")
    p.add_argument("--cpu-devices", type=int, help="split the CPU into N logical devices (testing data parallelism)")
    resume = p.add_mutually_exclusive_group()
    resume.add_argument("--resume", action="store_true", default=None,
                        help="continue the run in --out (rerunning the same command does this too)")
    resume.add_argument("--no-resume", dest="resume", action="store_false",
                        help="refuse to touch an existing run folder")
    return p.parse_args(argv)


def recipe_from_args(args):
    if not args.method and not args.config:
        import zoo
        raise SystemExit(f"error: name a method ({', '.join(zoo.list_methods())}) or give --config.")
    if args.method:
        from zoo.registry import get_method
        try:
            get_method(args.method)
        except ValueError as e:
            raise SystemExit(f"error: {e}")
    recipe = recipes.load_recipe(args.method, args.config)
    for key, value in (("data", args.data), ("epochs", args.epochs), ("batch_size", args.batch_size),
                       ("seed", args.seed)):
        if value is not None:
            recipe[key] = value
    if args.lr is not None:
        recipe["optimizer"]["learning_rate"] = args.lr
    for key, value in (("backbone", args.backbone), ("width", args.width)):
        if value is not None:
            recipe["method_config"][key] = value
    for assignment in args.set:
        recipes.set_value(recipe, assignment)
    return recipe


def main(argv=None):
    args = parse_args(argv)
    strategy = make_strategy(args.strategy, args.cpu_devices)  # before anything else touches TF's devices
    try:
        recipe = recipe_from_args(args)
    except (ValueError, FileNotFoundError) as e:
        raise SystemExit(f"error: {e}")
    out = args.out or os.path.join("runs", recipe["method"])
    from zoo.data import DataError
    try:
        train(recipe, out, resume=args.resume, strategy=strategy)
    except DataError as e:
        raise SystemExit(f"error: {e}")
    print(f"run folder: {os.path.abspath(out)}")


if __name__ == "__main__":
    main()
