"""SSLMethod: what every self-supervised method shares.

A method is a `keras.Model` that owns an `encoder` (the backbone that gets exported) and the
heads it needs for its pretext task. It implements two things:

- `make_views(images, labels, seed) -> dict`: the pretext inputs and labels for a batch of
  uint8 images, built with tf ops so it runs in the tf.data pipeline, not in the step;
- `pretext_loss(views, training) -> (loss, metrics)`: the mean loss over the LOCAL batch and a
  dict of scalar metrics. (Named so as not to shadow `keras.Model.compute_loss`, whose
  signature Keras itself calls.)

The generic `train_step` turns that into a gradient step that is the same computation on one
device and on N replicas: each replica's loss is divided by N (equal local batches), so the
summed gradients equal the gradient of the global-batch mean; logged metrics are the mean over
replicas. Subclasses override `train_step` only when the update is not a plain gradient step.
"""
import dataclasses

import keras
import tensorflow as tf

from zoo.backbones import IMAGENET_MEAN, IMAGENET_STD, build_backbone, resolve_stem
from zoo.distribute import is_multi_worker
from zoo.optimizers import batches_seen


@dataclasses.dataclass
class MethodConfig:
    """Fields shared by every method; each method extends it with its paper's defaults."""
    backbone: str = "resnet18"
    width: float = 1.0
    image_size: int = 32           # training resolution of the views
    stem: str = "auto"             # "cifar" (3x3, no max-pool) below 96 px, else "imagenet"
    sync_bn: bool = False          # synchronised batch norm across replicas
    mean: tuple = IMAGENET_MEAN
    std: tuple = IMAGENET_STD

    def to_dict(self):
        return dataclasses.asdict(self)


class SSLMethod(keras.Model):
    Config = MethodConfig
    method_name = "base"
    # Names of the scalars `pretext_loss` returns besides the loss; their trackers are made
    # up front because a variable first created inside a distributed step is an error.
    metric_names = ()
    # True for methods that tell images apart (NPID, exemplar): `make_views` then receives each
    # image's index in the training array as `labels`, and a `num_examples` config field is
    # filled in by the trainer with the training-set size.
    uses_example_ids = False
    # False for methods whose image views are normalised per patch (jigsaw) instead of [0, 1].
    unit_range_views = True
    # The run's length in batches, set by the trainer (or the user) before `fit`; None: unknown.
    # Methods with a schedule over the whole run (BYOL's target momentum, DINO's teacher
    # temperature) read it through `training_progress`.
    total_steps = None

    def __init__(self, config=None, **kwargs):
        super().__init__(name=self.method_name, **kwargs)
        self.config = config if config is not None else self.Config()
        c = self.config
        self.encoder = build_backbone(c.backbone, width=c.width, image_size=c.image_size, stem=c.stem,
                                      sync_bn=c.sync_bn, mean=c.mean, std=c.std)
        self.encoder_stem = resolve_stem(c.stem, c.image_size)
        self.feature_dim = self.encoder.output_shape[-1]
        self._trackers = {n: keras.metrics.Mean(name=n) for n in ("loss", *self.metric_names)}
        self.build_heads()
        # Every variable a step needs exists before fit (../shared/DESIGN.md, the design sketch
        # beside the repository, not in it, "The method contract": a head first built inside
        # train_step fails under MirroredStrategy with "Unknown variable").
        self.built = True

    # --- what a method implements -------------------------------------------------------
    def build_heads(self):
        """Create (and build) the pretext heads. Heads are functional models, so built."""

    def make_views(self, images, labels, seed):
        raise NotImplementedError

    def pretext_loss(self, views, training=False):
        raise NotImplementedError

    def training_subset(self, images):
        """Indices of the training images the method trains on (None: all of them). Exemplar
        CNN trains on a fixed set of seed images, one surrogate class each."""
        return None

    # Host-side work between epochs (DeepCluster's k-means), or None: `on_epoch_start(epoch, images,
    # labels)` with `images` the training array that example ids index and `labels` their classes
    # (None when unknown; DeepCluster reports its NMI against them). `zoo-train` calls it through
    # `epoch_start_callback`; pass that callback to your own `fit` too.
    on_epoch_start = None
    # Where that host-side work reports progress: a function of one string (`zoo-train` sets its log).
    progress_log = print

    def epoch_start_callback(self, images=None, labels=None):
        """A Keras callback that runs `on_epoch_start(epoch, images, labels)` before every epoch of `fit`."""
        return EpochStartCallback(self, images, labels)

    def view_panels(self, views, index):
        """[(caption, float image HxWx3 in [0, 1])] showing example `index` of a views batch, for
        `zoo-views` (trainers/show_views.py). Default: each image view of the example ([B,h,w,3] or
        [B,k,h,w,3]), captioned with its name and the example's integer labels."""
        import numpy as np
        labels = " ".join(f"{k}={int(v[index])}" for k, v in views.items() if v.shape.rank == 1 and v.dtype.is_integer)
        panels = []
        for key, value in views.items():
            if value.dtype.is_floating and value.shape.rank in (4, 5):
                images = np.asarray(value[index])
                images = images[None] if images.ndim == 3 else images
                panels += [(f"{key}[{j}] {labels}" if len(images) > 1 else f"{key} {labels}", image)
                           for j, image in enumerate(images)]
        return panels

    # --- shared machinery ---------------------------------------------------------------
    def call(self, images, training=False):
        """Encoder features of float images in [0, 1]."""
        return self.encoder(images, training=training)

    @property
    def metrics(self):
        return list(self._trackers.values())

    def _update_metrics(self, loss, metrics):
        logs = {"loss": loss, **metrics}
        unknown = set(logs) - set(self._trackers)
        if unknown:
            raise ValueError(f"{type(self).__name__}.pretext_loss returned metrics {sorted(unknown)} "
                             f"that are not in its metric_names {self.metric_names}.")
        for name, value in logs.items():
            self._trackers[name].update_state(value)
        results = {name: tracker.result() for name, tracker in self._trackers.items()}
        if is_multi_worker(tf.distribute.get_strategy()):
            # keras-team/keras#20585: with several workers Keras reduces step logs with
            # strategy.reduce("MEAN", v, axis=0), which rejects scalars; [1] reduces to the mean.
            results = {name: tf.reshape(value, [1]) for name, value in results.items()}
        return results

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # keras-team/keras#20585: under MultiWorkerMirroredStrategy Keras builds from the first
        # batch by strategy.reduce(...) on a PerReplica dict, which fails ("Attempt to convert a
        # value (PerReplica ...)"); build from this worker's first replica's batch instead. The
        # optimizer is then built here by Keras, inside the strategy (never build it by hand
        # before fit under this strategy: "Unknown variable").
        if iterator is not None and is_multi_worker(self.distribute_strategy):
            for _, _, batches in iterator:
                local = self.distribute_strategy.experimental_local_results
                data_batch = tf.nest.map_structure(lambda v: local(v)[0], next(batches))
                break
            iterator = None
        return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    def _as_views(self, data, seed):
        """Views as made by the tf.data pipeline, or, when `fit` is given plain image batches
        (`images` or `(images, labels)`), views made here: convenient, but the augmentation then
        runs inside the step instead of in parallel with it (prefer zoo.pipeline)."""
        if isinstance(data, dict):
            return data
        images, labels = data, None
        if isinstance(data, (tuple, list)):
            images, labels = data[0], (data[1] if len(data) > 1 else None)
        if labels is None:
            labels = tf.fill(tf.shape(images)[:1], -1)
        return self.make_views(images, labels, tf.stack([tf.constant(0, tf.int64), tf.cast(seed, tf.int64)]))

    def step_forward(self, views, training=False):
        """(loss, metrics, aux): `pretext_loss` plus whatever `after_update` needs (None here)."""
        loss, metrics = self.pretext_loss(views, training=training)
        return loss, metrics, None

    def after_update(self, views, aux, updated):
        """State that follows the optimizer step, outside the tape and after the loss has read
        the old state (memory banks, EMA key encoders, queues). `updated` is a bool tensor:
        False on batches where the optimizer only accumulated gradients or skipped a step."""

    def training_progress(self):
        """The fraction of the run done, a float32 scalar tensor in [0, 1]: batches seen by the
        optimizer / `total_steps` (0 while `total_steps` is None or before compile)."""
        if not self.total_steps or getattr(self, "optimizer", None) is None:
            return tf.constant(0.0)
        seen = tf.cast(batches_seen(self.optimizer), tf.float32)
        return tf.clip_by_value(seen / float(self.total_steps), 0.0, 1.0)

    def train_step(self, data):
        views = self._as_views(data, batches_seen(self.optimizer))
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        with tf.GradientTape() as tape:
            loss, metrics, aux = self.step_forward(views, training=True)
            loss = tf.cast(loss, tf.float32)  # a loss computed in a mixed-precision dtype
            scaled = self.optimizer.scale_loss(loss / replicas)  # loss scaling (mixed_float16)
        grads = tape.gradient(scaled, self.trainable_variables)
        before = tf.identity(self.optimizer.iterations)
        self.optimizer.apply(grads, self.trainable_variables)
        # Automatic control dependencies run the hook after the update, in program order.
        self.after_update(views, aux, tf.not_equal(tf.identity(self.optimizer.iterations), before))
        return self._update_metrics(loss, metrics)

    def test_step(self, data):
        views = self._as_views(data, 0)
        loss, metrics = self.pretext_loss(views, training=False)
        return self._update_metrics(loss, metrics)

    def get_config(self):
        return {"method": self.method_name, "config": self.config.to_dict()}


class EpochStartCallback(keras.callbacks.Callback):
    """Calls `method.on_epoch_start(epoch, images, labels)` eagerly before each epoch (nothing for
    methods without that hook)."""

    def __init__(self, method, images=None, labels=None):
        super().__init__()
        self.method, self.images, self.labels = method, images, labels

    def on_epoch_begin(self, epoch, logs=None):
        if self.method.on_epoch_start is not None:
            self.method.on_epoch_start(epoch, self.images, self.labels)
