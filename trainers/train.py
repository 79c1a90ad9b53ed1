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
from trainers.launcher import _without_option, launch_local_workers
from trainers.strategy import STRATEGIES, make_strategy, mixed_precision_policy, slow_bfloat16_warning

log = logging.getLogger("zoo.train")

# Recipe keys that may change between an interrupted run and its resumption.
# mixed_precision is among them: a run started in bfloat16 on a CPU that has it may continue in
# float32 on one that does not (6.5x slower there); the weights are float32 either way.
_RESUMABLE_CHANGES = {"epochs", "knn_every_epochs", "checkpoint_every_steps", "jit_compile", "max_nonfinite_steps",
                      "mixed_precision"}
LOCK_FILE = ".lock"  # in the run folder, while a zoo-train process writes it (trainers.locks)


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
        if os.path.isdir(out) and set(os.listdir(out)) - {LOCK_FILE}:
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


# A batch that leaves more than this share of the training images out of every epoch is warned about.
MAX_DROPPED_SHARE = 0.25


def fit_batch_to_data(batch_size, num_images, replicas=1, data="the data"):
    """(batch to train with, warning or None). A batch larger than the training set would
    train no step per epoch: it becomes the largest multiple of the replica count that fits
    (one step per epoch), with a warning. Fewer images than replicas cannot run at all."""
    if batch_size <= num_images:
        return batch_size, None
    fitted = num_images - num_images % replicas
    if fitted < 1:
        raise ValueError(f"{data} has {num_images} training images, fewer than the {replicas} replicas: each "
                         "replica needs at least one image per step. Add images, or train on fewer devices "
                         "(--strategy default).")
    return fitted, (f"WARNING: batch size {batch_size} is larger than the {num_images} training images of {data}: "
                    f"training with batch {fitted} instead (one step per epoch); set --batch-size to choose "
                    "another.")


def dropped_images_warning(num_images, batch_size, replicas=1):
    """A warning (or None) when the partial last batch, which every epoch drops (so that each
    replica gets an equal share), is more than MAX_DROPPED_SHARE of the training images; it
    names a batch size that drops fewer."""
    steps, dropped = divmod(num_images, batch_size)
    if dropped <= MAX_DROPPED_SHARE * num_images:
        return None
    more_steps = steps + 1
    better = num_images // more_steps // replicas * replicas
    fix = (f"--batch-size {better} would train {more_steps} steps of every epoch and drop "
           f"{num_images - more_steps * better}" if better >= 1 else "a smaller --batch-size drops fewer")
    return (f"WARNING: batch size {batch_size} over {num_images} training images: every epoch trains {steps} "
            f"step{'s' if steps > 1 else ''} and drops {dropped} images ({100 * dropped / num_images:.0f} %); "
            f"{fix}.")


def one_class_warning(data, class_names, measured="the kNN accuracy (val_knn_top1) is",
                      alternative=", or --set knn_every_epochs=0"):
    """zoo-train's warning about data of one class (and zoo-eval's, with its own `measured` and no
    `alternative`)."""
    return (f"WARNING: {data} has one class ({', '.join(class_names)}): {measured} "
            "100 % for any encoder and means nothing. Put the images in 2 or more class sub-folders to measure "
            f"the features{alternative}.")


def compile_method(method, recipe, steps_per_epoch):
    """Compile with the recipe's optimizer. Large-batch fields (all optional):
    `optimizer.lr_scaling`: none | linear | sqrt, with `optimizer.base_batch` (256): the peak
    learning rate is `learning_rate` x (batch / base_batch) (linear, Goyal et al. 2017) or
    x sqrt(batch) (SimCLR), where batch = batch_size x accumulate_steps (the batch of one
    update); `accumulate_steps` k: one update per k batches; `jit_compile`: XLA."""
    import tensorflow as tf
    from zoo.optimizers import constant_lr_variables, make_optimizer, scale_learning_rate
    opt = dict(recipe["optimizer"])
    name = opt.pop("name")
    warmup_epochs = opt.pop("warmup_epochs", 0)
    rule, base_batch = opt.pop("lr_scaling", "none") or "none", opt.pop("base_batch", 256)
    k = int(recipe.get("accumulate_steps") or 1)
    lr = opt.pop("learning_rate")
    batch = recipe["batch_size"] * k
    if rule != "none":
        scaled = scale_learning_rate(lr, batch, rule, base_batch)
        how = f"x {batch}/{base_batch}" if rule == "linear" else f"x sqrt({batch})"
        log.info(f"learning rate {lr:g} {how} = {scaled:g} ({rule} scaling rule)")
        lr = scaled
    if k > 1:
        log.info(f"gradient accumulation: one update per {k} batches of {recipe['batch_size']} "
                 f"(update batch {batch}; batch-norm statistics and negatives stay per batch)")
    total = recipe["epochs"] * steps_per_epoch  # in batches: the schedule counts batches
    optimizer = make_optimizer(name, lr, warmup_steps=int(warmup_epochs * steps_per_epoch), total_steps=total,
                               accumulate_steps=k, constant_lr_variables=constant_lr_variables(method), **opt)
    jit = recipe.get("jit_compile")
    if jit is None or isinstance(method.distribute_strategy, tf.distribute.TPUStrategy):
        jit = "auto"  # Keras: on for one GPU, off on CPUs and under tf.distribute (a TPU compiles anyway)
    method.compile(optimizer=optimizer, jit_compile=jit)
    return method


def train(recipe, out, resume=None, verbose=None, strategy=None):
    """Train `recipe` into the run folder `out`; returns the path of the final checkpoint.

    `strategy`: a tf.distribute strategy or a `make_strategy` name (default: the current
    strategy). `batch_size` is the global batch, split over all replicas of all workers. In a
    multi-worker run only the chief (worker 0) writes `out`; the other workers write into a
    scratch folder that they delete at the end, and every worker resumes from the checkpoints
    in `out` (so `out` must be on a file system all workers share).

    The whole recipe is checked (recipes.check_recipe, the batch against the data, the method
    built) before `out` is created, so a bad recipe leaves nothing behind. A batch larger than
    the training set is reduced to fit (`fit_batch_to_data`, with a warning); a batch that drops
    more than a quarter of every epoch, and data of one class, are warned about. `out` is locked
    (`out/.lock`, trainers.locks) while training: a second process on it is refused. A loss
    that becomes NaN or inf stops the run with NonFiniteError, a full disk while checkpointing
    with DiskFullError (see callbacks.Checkpointer); both keep the last complete checkpoint.

    Optional recipe fields: `accumulate_steps`, `jit_compile`, `optimizer.lr_scaling` (see
    `compile_method`), `mixed_precision: true` (see `mixed_precision_policy`) and
    `max_nonfinite_steps` (default 0: stop at the first non-finite loss)."""
    import shutil
    import tempfile

    import keras
    import tensorflow as tf
    import zoo
    from trainers.callbacks import latest_checkpoint
    from trainers.locks import folder_lock
    from zoo.distribute import is_chief, is_multi_worker, replica_disagreement, worker_index

    if isinstance(strategy, str):
        strategy = make_strategy(strategy)
    strategy = strategy or tf.distribute.get_strategy()
    chief, multi_worker = is_chief(strategy), is_multi_worker(strategy)
    recipes.check_recipe(recipe)
    replicas = strategy.num_replicas_in_sync
    if recipe["batch_size"] % replicas:
        raise SystemExit(f"error: batch size {recipe['batch_size']} does not split evenly over {replicas} "
                         "replicas; use a multiple of the replica count.")
    if recipe.get("jit_compile") and replicas > 1 and not isinstance(strategy, tf.distribute.TPUStrategy):
        raise SystemExit("error: --jit-compile needs one device per process (or a TPU, which compiles with XLA "
                         "anyway): Keras 3 compiles the whole replicated step as one XLA cluster, which cannot use "
                         "variables on several devices (measured on 2 logical CPUs).")
    train_data = zoo.data.load_arrays(recipe["data"], "train")
    val_data = zoo.data.load_arrays(recipe["data"], "val")
    fill_num_examples(recipe, len(train_data.images))
    previous_policy = keras.config.dtype_policy()
    run_dir = None
    try:
        if recipe.get("mixed_precision"):
            keras.config.set_dtype_policy(mixed_precision_policy(strategy))
        keras.utils.set_random_seed(recipe["seed"])
        with strategy.scope():
            method = build_method(recipe)  # a bad method_config fails here, before `out` exists
        # Small data: warnings logged once train.log exists. The recipe records the batch used, so
        # eval and export see it, and rerunning the same command adapts the same way and resumes.
        subset = method.training_subset(train_data.images)
        recipe["batch_size"], batch_warning = fit_batch_to_data(
            recipe["batch_size"], len(train_data.images if subset is None else subset), replicas, recipe["data"])
        data_warnings = [batch_warning] if batch_warning else []
        if train_data.num_classes < 2:
            data_warnings.append(one_class_warning(recipe["data"], train_data.class_names))
        run_dir = out if chief else tempfile.mkdtemp(prefix=f"zoo-worker{worker_index(strategy)}-")
        created = not os.path.isdir(run_dir)
        os.makedirs(run_dir, exist_ok=True)
        with folder_lock(os.path.join(run_dir, LOCK_FILE), f"run folder {run_dir}"):
            prepare_run_dir(run_dir, recipe, resume if chief else None)
            _setup_logging(run_dir)
            for message in data_warnings:
                log.warning(message)
            restore, start_step = latest_checkpoint(os.path.join(out, "checkpoints"))
            if multi_worker and replica_disagreement(strategy, lambda: [tf.constant(start_step, tf.float64)]):
                raise SystemExit(f"error: the workers found different checkpoints to resume from (step {start_step} "
                                 f"here): {out} must be on a file system that every worker shares.")
            return _train(recipe, method, out, run_dir, restore, start_step, strategy, verbose, train_data, val_data)
    finally:
        keras.config.set_dtype_policy(previous_policy)
        if not chief and run_dir:
            shutil.rmtree(run_dir, ignore_errors=True)
        elif run_dir and created and not os.listdir(run_dir):  # refused before anything was written
            os.rmdir(run_dir)


def _log_to_file(message):
    """`message` into train.log only (the CLI prints it to stderr itself)."""
    for handler in log.handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(log.makeRecord(log.name, logging.ERROR, __file__, 0, message, None, None))


def _train(recipe, method, out, run_dir, restore, start_step, strategy, verbose, train_data, val_data):
    """The body of `train`, writing into `run_dir` (`out` on the chief)."""
    import keras
    import tensorflow as tf
    from trainers.callbacks import (Checkpointer, CollapseMonitor, KNNMonitor, MetricsFile, NonFiniteError,
                                    ProgressLines)
    from zoo.distribute import is_chief, is_multi_worker, num_workers, replica_disagreement
    from zoo.pipeline import pretext_dataset, steps_per_epoch

    chief, multi_worker = is_chief(strategy), is_multi_worker(strategy)
    bs, epochs = recipe["batch_size"], recipe["epochs"]
    accumulate = int(recipe.get("accumulate_steps") or 1)
    spe = steps_per_epoch(len(train_data.images), bs)
    total = epochs * spe
    log.info(f"{recipe['method']} on {recipe['data']}: {len(train_data.images)} train / "
             f"{len(val_data.images)} val images, batch {bs}, {spe} steps/epoch, {epochs} epochs -> {out}")
    subset = method.training_subset(train_data.images)
    train_images, train_labels = train_data.images, train_data.labels
    if subset is not None:
        train_images, train_labels = train_images[subset], train_labels[subset]
        spe = steps_per_epoch(len(train_images), bs)
        total = epochs * spe
        log.info(f"{recipe['method']} trains on {len(train_images)} of the images: {spe} steps/epoch")
    dropped = dropped_images_warning(len(train_images), bs, strategy.num_replicas_in_sync)
    if dropped:
        log.warning(dropped)
    if start_step >= total:
        log.info(f"already trained for {start_step} steps ({epochs} epochs): nothing to do.")
        return restore
    with strategy.scope():
        compile_method(method, recipe, spe)
    method.total_steps = total  # schedules over the whole run (BYOL's momentum) read it
    if strategy.num_replicas_in_sync > 1:
        workers = f" on {num_workers(strategy)} workers" if multi_worker else ""
        log.info(f"{type(strategy).__name__}: {strategy.num_replicas_in_sync} replicas{workers}, "
                 f"{bs // strategy.num_replicas_in_sync} images each")
    if keras.config.dtype_policy().name != "float32":
        log.info(f"mixed precision: {keras.config.dtype_policy().name}")
        slow = slow_bfloat16_warning(keras.config.dtype_policy().name)
        if slow:
            log.warning(slow)
    if method.jit_compile is True:
        log.info("XLA: the train step is compiled with jit_compile=True")
    log.info(f"encoder {method.encoder.name}: {method.encoder.count_params():,} parameters, "
             f"{method.feature_dim}-d features")

    checkpointer = Checkpointer(os.path.join(run_dir, "checkpoints"), recipe["checkpoint_every_steps"],
                                restore_from=restore, log=log.info, accumulate_steps=accumulate,
                                max_nonfinite_steps=recipe.get("max_nonfinite_steps", 0))
    callbacks = [checkpointer]
    if method.on_epoch_start is not None:  # between-epoch work of the method (DeepCluster's k-means)
        method.progress_log = log.info
        callbacks.insert(0, method.epoch_start_callback(train_images, train_labels))
    if chief:  # a multi-worker run's other workers write nothing that is kept
        if recipe["knn_every_epochs"] and len(val_data.images):
            callbacks.append(KNNMonitor(train_data.images, train_data.labels, val_data.images, val_data.labels,
                                        train_data.num_classes, recipe["knn_every_epochs"], last_epoch=epochs,
                                        log=log.info, **recipe["knn"]))
        monitor_images = val_data.images if len(val_data.images) >= 2 else train_images
        callbacks.append(CollapseMonitor(monitor_images, log=log.info, warn=log.warning))
        callbacks += [MetricsFile(os.path.join(out, "metrics.jsonl"), completed_epochs=start_step // spe),
                      keras.callbacks.TensorBoard(os.path.join(out, "tensorboard"), update_freq=50)]
    previous_handlers = {sig: signal.signal(sig, checkpointer.request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}

    if verbose is None:
        verbose = 1 if sys.stdout.isatty() else 2
    if verbose == 2 and chief:  # Keras prints once per epoch outside a terminal: add a line every ~10 s
        callbacks.append(ProgressLines(bs, epochs, log=log.info))
    started = time.time()
    options = tf.data.Options()  # every worker makes the global batch's views, then keeps its part of it
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA

    def run(begin, end, initial_epoch, last_epoch, steps):
        ds = pretext_dataset(method, train_images, train_labels, bs, epochs, recipe["seed"], begin, end)
        method.fit(ds.with_options(options), initial_epoch=initial_epoch, epochs=last_epoch, steps_per_epoch=steps,
                   callbacks=callbacks, verbose=verbose, shuffle=False)  # the pipeline shuffles
        if checkpointer.stopped:
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
        final = checkpointer.save(checkpointer.step())
    except NonFiniteError as e:
        _log_to_file(f"error: {e}")
        raise
    finally:
        for sig, handler in previous_handlers.items():
            signal.signal(sig, handler)
    log.info(f"done: {total} steps in {(time.time() - started) / 60:.1f} min this session; final checkpoint {final}")
    if multi_worker:  # (batch-norm moving statistics are per replica unless sync_bn: Keras 3 does not average them)
        disagreement = replica_disagreement(strategy, lambda: [v.value for v in method.trainable_weights])
        if disagreement:
            raise RuntimeError(f"the workers ended with different weights (sum of max differences {disagreement:g})")
        log.info(f"all {num_workers(strategy)} workers hold identical trainable weights")
    return os.path.join(out, "checkpoints", os.path.basename(final))


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        prog="zoo-train", description="Train a self-supervised method (see zoo.list_methods()).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Example: zoo-train simclr --data shapes --epochs 5 --width 0.25 --out runs/simclr_shapes\n\n"
               "The whole recipe (flags, --set, --config) is checked before the run folder is written; a bad\n"
               "value is refused with one `error: ...` line (exit status 2). Rerunning the same command resumes.\n"
               "One process per run folder: a second zoo-train on the same --out is refused (OUT/.lock).\n"
               "A NaN or inf loss stops the run (exit status 1) keeping the last finite checkpoint;\n"
               "--set max_nonfinite_steps=N tolerates N such steps (default 0). A full disk stops it the\n"
               "same way (exit status 1), naming the folder and the space left. ZOO_DEBUG=1: tracebacks.")
    p.add_argument("method", nargs="?", help="method name, e.g. simclr or rotation (default: the --config's)")
    p.add_argument("--config", help="recipe YAML (default: trainers/configs/METHOD_cifar10.yaml)")
    p.add_argument("--data", help="data spec: shapes | folder:PATH (or a plain folder PATH) | cifar10-jpeg:PATH | "
                                  "tfds:NAME")
    p.add_argument("--out", help="run folder (default: runs/METHOD)")
    p.add_argument("--epochs", type=int, help="number of epochs, 1 or more")
    p.add_argument("--batch-size", type=int,
                   help="global batch (default 256; larger than the training set: reduced to fit, with a warning)")
    p.add_argument("--lr", type=float, help="peak learning rate (> 0)")
    p.add_argument("--backbone", help="resnet18 | resnet34 | resnet50")
    p.add_argument("--width", type=float, help="width multiplier of the backbone")
    p.add_argument("--seed", type=int)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe field, e.g. --set method_config.temperature=0.2 (values are YAML; "
                        "unknown fields are refused)")
    p.add_argument("--strategy", default="default", choices=STRATEGIES,
                   help="default (one device) | mirrored (all GPUs, or --cpu-devices) | multiworker (TF_CONFIG, "
                        "or --workers N) | tpu (--tpu ADDRESS)")
    p.add_argument("--cpu-devices", type=int, help="split the CPU into N logical devices (testing data parallelism)")
    p.add_argument("--workers", type=int,
                   help="with --strategy multiworker: start N worker processes on this machine (127.0.0.1)")
    p.add_argument("--tpu", help="with --strategy tpu: the TPU name or grpc:// address (default: the local TPU VM)")
    p.add_argument("--sync-bn", action="store_true", default=None,
                   help="synchronised batch norm across replicas (method_config.sync_bn)")
    p.add_argument("--accumulate-steps", type=int, metavar="K",
                   help="gradient accumulation: one update per K batches (update batch = K x --batch-size)")
    p.add_argument("--lr-scaling", choices=("none", "linear", "sqrt"),
                   help="scale the learning rate with the update batch: linear (lr x batch/256) or sqrt")
    p.add_argument("--jit-compile", action="store_true", default=None, help="compile the train step with XLA")
    p.add_argument("--mixed-precision", action="store_true", default=None,
                   help="mixed_float16 on GPUs (with loss scaling), mixed_bfloat16 on TPUs and CPUs")
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
    if args.sync_bn:
        recipe["method_config"]["sync_bn"] = True
    if args.lr_scaling:
        recipe["optimizer"]["lr_scaling"] = args.lr_scaling
    for key, value in (("accumulate_steps", args.accumulate_steps), ("jit_compile", args.jit_compile),
                       ("mixed_precision", args.mixed_precision)):
        if value is not None:
            recipe[key] = value
    for assignment in args.set:
        recipes.set_value(recipe, assignment)
    return recipes.check_recipe(recipe)


def main(argv=None):
    from trainers.callbacks import NonFiniteError
    from trainers.errors import fail, user_errors
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    if args.workers:
        if args.strategy != "multiworker":
            fail("--workers N starts N local workers of --strategy multiworker; add that flag.")
        if "TF_CONFIG" in os.environ:
            fail("--workers starts its own workers, but TF_CONFIG is set: unset it, or drop "
                 "--workers to run as one worker of the cluster TF_CONFIG describes.")
        with user_errors():
            recipe_from_args(args)  # fail here, not in every worker
        raise SystemExit(launch_local_workers(_without_option(argv, "--workers"), args.workers))
    strategy = make_strategy(args.strategy, args.cpu_devices, args.tpu)  # before anything else touches TF's devices
    with user_errors():
        recipe = recipe_from_args(args)
        out = args.out or os.path.join("runs", recipe["method"])
        try:
            train(recipe, out, resume=args.resume, strategy=strategy)
        except NonFiniteError as e:
            fail(e, status=1)
    print(f"run folder: {os.path.abspath(out)}")


if __name__ == "__main__":
    main()
