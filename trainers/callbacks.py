"""Callbacks of a training run: checkpoints that make it resumable, the kNN monitor, a metrics
file. They work with any `keras.Model.fit`, so library users can attach them too."""
import glob
import json
import os
import re
import time

import keras
import numpy as np

from trainers.errors import DiskFullError, free_space, is_disk_full

_CKPT = re.compile(r"step-(\d+)\.weights\.h5$")


class NonFiniteError(RuntimeError):
    """The loss or the weights became NaN or inf; the message names the step and the last
    checkpoint kept."""


def nonfinite_variables(variables):
    """Paths of the float variables among `variables` that hold NaN or inf."""
    bad = []
    for v in variables:
        value = keras.ops.convert_to_numpy(v.value)
        if np.issubdtype(value.dtype, np.floating) and not np.all(np.isfinite(value)):
            bad.append(v.path)
    return bad


def latest_checkpoint(directory):
    """(path, step) of the newest complete checkpoint in `directory`, or (None, 0)."""
    found = []
    for path in glob.glob(os.path.join(directory, "step-*.weights.h5")):
        m = _CKPT.search(os.path.basename(path))
        if m:
            found.append((int(m.group(1)), path))
    if not found:
        return None, 0
    step, path = max(found)
    return path, step


class Checkpointer(keras.callbacks.Callback):
    """Saves model + optimizer state every `every_steps` steps, at each epoch end, and when a
    stop is requested (SIGTERM / Ctrl-C, see `request_stop`). A checkpoint is written to a
    temporary file and renamed, so a kill at any moment leaves the previous one intact; the
    step is in the file name, so weights and step can never disagree.

    A step is one batch (the data position a resumed run continues from). With gradient
    accumulation over `accumulate_steps` batches, checkpoints and stops happen only after a
    full accumulation (the optimizer's accumulators, kept per replica, are then zero).

    Under MultiWorkerMirroredStrategy every worker runs this callback (the chief into the run
    folder, the others into a scratch folder) and a stop requested on any worker stops all of
    them after the same step (one all-reduce per step).

    `restore_from`: a checkpoint path loaded in on_train_begin (after Keras has built the
    optimizer, so its slots are restored too).

    Nothing non-finite is kept: a checkpoint whose weights or optimizer state hold NaN or inf
    is never written (`save` raises NonFiniteError, so the older checkpoints stay), and once
    the loss has been non-finite on more than `max_nonfinite_steps` steps (0: at the first;
    None: not checked) NonFiniteError is raised out of `fit` before anything is saved at that
    step. Raising, unlike keras.callbacks.TerminateOnNaN's graceful stop, keeps the epoch-end
    callbacks (this one's save, the monitors) from running on the broken weights. Keras logs
    the epoch's running mean of the loss, so after one non-finite step every later step of
    that epoch counts too.

    A full disk while saving raises DiskFullError out of `fit`: the partial temporary file is
    removed and the older checkpoints stay, and the message names the folder, the space left
    and the checkpoint kept."""

    def __init__(self, directory, every_steps=500, keep=2, restore_from=None, log=print, accumulate_steps=1,
                 max_nonfinite_steps=0):
        super().__init__()
        self.directory = directory
        self.every_steps = every_steps
        self.max_nonfinite_steps = max_nonfinite_steps
        self.nonfinite_steps = 0
        self.keep = keep
        self.restore_from = restore_from
        self.accumulate_steps = max(1, int(accumulate_steps))
        self.stop_requested = False  # set by the signal handler on this process
        self.stopped = False         # set when training was stopped (on every worker at once)
        self.log = log
        self._step = None
        self._epoch_start = 0
        self._any_worker = None
        os.makedirs(directory, exist_ok=True)

    def request_stop(self, *_):
        if self.stop_requested:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        self.stop_requested = True

    def step(self):
        """Batches trained so far. (The optimizer's `iterations` would count updates, which
        differ with gradient accumulation, and mixed_float16 skips updates of non-finite steps.)"""
        if self._step is None:
            from zoo.optimizers import batches_seen
            return int(keras.ops.convert_to_numpy(batches_seen(self.model.optimizer)))
        return self._step

    def on_train_begin(self, logs=None):
        if self.restore_from:
            optimizer = self.model.optimizer
            if not optimizer.built:  # without a strategy scope Keras builds it only when tracing
                optimizer.build(self.model.trainable_variables)
            self.model.load_weights(self.restore_from)
            expected = int(_CKPT.search(self.restore_from).group(1))
            restored = self.step()
            if restored > expected or (restored < expected and not isinstance(optimizer, keras.optimizers.LossScaleOptimizer)):
                raise RuntimeError(f"Checkpoint {self.restore_from} holds optimizer step {restored}, "
                                   f"expected {expected}: the file is inconsistent; delete it to fall back.")
            self._step = expected
            self.log(f"resumed from {self.restore_from} (step {expected})")
            self.restore_from = None
        if self._step is None:
            self._step = self.step()
        from zoo.distribute import AnyReplica, is_multi_worker
        if self._any_worker is None and is_multi_worker(self.model.distribute_strategy):
            self._any_worker = AnyReplica(self.model.distribute_strategy)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = self._step

    def on_train_batch_end(self, batch, logs=None):
        self._step = step = self._epoch_start + batch + 1
        loss = (logs or {}).get("loss")
        if self.max_nonfinite_steps is not None and loss is not None and not np.all(np.isfinite(loss)):
            self.nonfinite_steps += 1
            if self.nonfinite_steps > self.max_nonfinite_steps:
                raise NonFiniteError(f"the loss is {float(np.ravel(loss)[0])} at step {step}; training stopped. "
                                     f"{self._kept()} Lower the learning rate (--lr) and train into a new --out.")
        if step % self.accumulate_steps:
            return
        stop = self.stop_requested if self._any_worker is None else self._any_worker(self.stop_requested)
        if stop:
            self.save(step)
            self.stopped = self.model.stop_training = True
        elif self.every_steps and step % self.every_steps == 0:
            self.save(step)

    def on_epoch_end(self, epoch, logs=None):
        if self._step % self.accumulate_steps == 0:
            self.save(self._step)

    def _kept(self, which="finite"):
        path, step = latest_checkpoint(self.directory)
        if path is None:
            return "No checkpoint was written before it."
        return f"Kept the last {which} checkpoint, {path} (step {step})."

    def save(self, step):
        """Write the checkpoint of `step` (unless it exists) and delete all but the newest
        `keep`; returns its path. Raises NonFiniteError instead if any variable is non-finite."""
        path = os.path.join(self.directory, f"step-{step:08d}.weights.h5")
        if os.path.exists(path):
            return path
        bad = nonfinite_variables(self.model.weights + list(self.model.optimizer.variables))
        if bad:
            raise NonFiniteError(f"the weights hold NaN or inf at step {step} ({len(bad)} variables, first "
                                 f"{bad[0]}); not saving them. {self._kept()} Lower the learning rate (--lr) "
                                 "and train into a new --out.")
        tmp = os.path.join(self.directory, f".tmp-{os.getpid()}.weights.h5")
        try:
            self.model.save_weights(tmp)
            os.replace(tmp, path)
        except BaseException as e:  # e.g. a full disk: no half-written file is left behind
            if os.path.exists(tmp):
                os.remove(tmp)
            if is_disk_full(e):
                raise DiskFullError(
                    f"the disk of {self.directory} is full ({free_space(self.directory)}): the checkpoint of step "
                    f"{step} could not be written, and its partial file was removed. {self._kept('complete')} Free "
                    "some space there and rerun the same command to resume from it.") from e
            raise
        old = sorted(glob.glob(os.path.join(self.directory, "step-*.weights.h5")))[:-self.keep]
        for p in old:
            os.remove(p)
        return path


class KNNMonitor(keras.callbacks.Callback):
    """Weighted kNN top-1 (k=200, cosine, t=0.1) of the encoder's features on a held-out split,
    every `every_epochs` epochs and after the last one, added to the epoch logs as
    `val_knn_top1` (so TensorBoard and the metrics file record it) and printed."""

    def __init__(self, bank_images, bank_labels, query_images, query_labels, num_classes,
                 every_epochs=5, last_epoch=None, k=200, temperature=0.1, log=print):
        super().__init__()
        self.bank = (bank_images, np.asarray(bank_labels))
        self.query = (query_images, np.asarray(query_labels))
        self.num_classes = num_classes
        self.every_epochs = every_epochs
        self.last_epoch = last_epoch
        self.k, self.temperature = k, temperature
        self.log = log

    def evaluate(self):
        from zoo.eval import encoder_knn_accuracy
        return encoder_knn_accuracy(self.model.encoder, *self.bank, *self.query, self.num_classes,
                                    k=self.k, temperature=self.temperature)

    def on_epoch_end(self, epoch, logs=None):
        done = epoch + 1
        if (self.every_epochs and done % self.every_epochs == 0) or done == self.last_epoch:
            start = time.time()
            top1 = self.evaluate()
            if logs is not None:
                logs["val_knn_top1"] = top1
            self.log(f"epoch {done}: kNN top-1 on val = {top1:.4f} ({time.time() - start:.1f} s)")


class CollapseMonitor(keras.callbacks.Callback):
    """After every epoch: the collapse monitors of the encoder's features on `images` (a fixed
    set of at most `max_images` uint8 images; zoo.eval.collapse), added to the epoch logs as
    `embedding_std`, `embedding_std_ratio` (std x sqrt(D), ~1 when spread out) and
    `effective_rank`, so metrics.jsonl and TensorBoard record them. A collapsed encoder (std
    ratio below 0.02 or effective rank below 1.5) is reported with `warn`, naming the epoch."""

    def __init__(self, images, max_images=2000, log=print, warn=print):
        super().__init__()
        self.images = images[:max_images]
        self.log, self.warn = log, warn

    def on_epoch_end(self, epoch, logs=None):
        from zoo.eval import collapse_stats, extract_features
        stats = collapse_stats(extract_features(self.model.encoder, self.images, verbose=False))
        if logs is not None:
            logs.update({k: v for k, v in stats.items() if k != "collapsed"})
        summary = (f"embedding std {stats['embedding_std']:.4f} (x sqrt(D) = {stats['embedding_std_ratio']:.3f}), "
                   f"effective rank {stats['effective_rank']:.1f}")
        if stats["collapsed"]:
            self.warn(f"WARNING: epoch {epoch + 1}: the representation has collapsed ({summary}): every image gets "
                      "nearly the same features. Lower the learning rate, check the recipe against the paper's, "
                      "or stop this run.")
        else:
            self.log(f"epoch {epoch + 1}: {summary}")


class MetricsFile(keras.callbacks.Callback):
    """Appends one JSON line per epoch (all logs, global step, the epoch's wall time) to `path`.

    `completed_epochs`: the whole epochs the run starts after. Rows of later epochs already in
    the file (a run restarted from an earlier checkpoint, or from scratch in a folder that kept
    its old metrics) are dropped, as those epochs are trained and written again."""

    def __init__(self, path, completed_epochs):
        super().__init__()
        self.path = path
        self._epoch_start = time.time()
        if os.path.exists(path):
            with open(path) as f:
                lines = [line for line in f if line.strip()]
            kept = [line for line in lines if json.loads(line)["epoch"] <= completed_epochs]
            if len(kept) < len(lines):
                with open(path, "w") as f:
                    f.writelines(kept)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = time.time()

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": epoch + 1, "step": int(keras.ops.convert_to_numpy(self.model.optimizer.iterations)),
               "epoch_seconds": round(time.time() - self._epoch_start, 2)}
        row.update({k: float(v) for k, v in (logs or {}).items()})
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")


def _duration(seconds):
    """12 s, 3 min 05 s, 1 h 02 min."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class ProgressLines(keras.callbacks.Callback):
    """One progress line at least every `every_seconds` of wall time within an epoch: epoch,
    steps done / steps of the epoch, images/s and the epoch's ETA (and the running loss). For
    logs: outside a terminal Keras prints only once per epoch (verbose=2), its line is kept.
    `clock` returns seconds (injectable, so tests need not sleep)."""

    EVERY_SECONDS = 10.0  # the default interval

    def __init__(self, batch_size, epochs=None, every_seconds=None, log=print, clock=time.monotonic):
        super().__init__()
        self.batch_size, self.epochs = batch_size, epochs
        self.every_seconds = self.EVERY_SECONDS if every_seconds is None else every_seconds
        self.log, self.clock = log, clock
        self._epoch, self._start, self._last = 0, 0.0, 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._start = self._last = self.clock()

    def on_train_batch_end(self, batch, logs=None):
        now = self.clock()
        if now - self._last < self.every_seconds:
            return
        self._last = now
        done, steps = batch + 1, (self.params or {}).get("steps")  # steps of this fit's epochs
        elapsed = max(now - self._start, 1e-9)
        epoch = f"epoch {self._epoch + 1}" + (f"/{self.epochs}" if self.epochs else "")
        line = f"{epoch}: step {done}" + (f"/{steps}" if steps else "")
        line += f", {done * self.batch_size / elapsed:.1f} images/s"
        if steps:
            line += f", ETA of the epoch {_duration((steps - done) * elapsed / done)}"
        loss = (logs or {}).get("loss")
        if loss is not None:
            line += f", loss {float(np.ravel(keras.ops.convert_to_numpy(loss))[0]):.4f}"
        self.log(line)
