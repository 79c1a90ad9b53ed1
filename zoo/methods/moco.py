"""MoCo: Momentum Contrast for Unsupervised Visual Representation Learning (He, Fan, Wu, Xie,
Girshick, CVPR 2020) and MoCo v2: Improved Baselines with Momentum Contrastive Learning (Chen,
Fan, Girshick, He 2020). `version: 1` or `2` (default).

Two views of every image: the query view goes through the query encoder f_q = `self.encoder`
+ `projector` (v1: linear to 128-d; v2: MLP hidden -> ReLU -> 128), the key view through the
key encoder f_k = `key_encoder` + `key_projector`, a copy of the same architecture that gets
no gradient and follows the query encoder by momentum after every optimizer step,
    theta_k <- m theta_k + (1 - m) theta_q,   m = 0.999   (zoo.momentum.ema_update).
q and k are L2-normalised; the loss is InfoNCE over 1 + K logits per query
(`zoo.losses.moco_logits`),
    -log exp(q.k+ / t) / (exp(q.k+ / t) + sum_{j < K} exp(q.queue_j / t)),
with the positive k+ = the key of the query's own image and the negatives the K keys of the
queue (zoo.memory_bank.FeatureQueue), NOT the current batch's other keys (as in the paper).
Temperature 0.07 (v1) / 0.2 (v2). After the optimizer step and the momentum update, the
batch's keys (of every replica, in global order: FeatureQueue.enqueue gathers them) replace
the oldest K... entries, so the loss always reads the queue as it was before the step.
Like MoCo's code, the key forward runs in training mode (batch statistics) and the key
encoder's batch-norm moving statistics are its own (updated by its forward passes), not
averaged from the query encoder's.

Order within a step equals MoCo's: MoCo momentum-updates the key encoder at the START of a
step, with the query weights of the previous step's update; here it happens at the END of the
previous step, with the same weights. With gradient accumulation the momentum update happens
only on the batches where the optimizer actually changed the weights (m = 1 otherwise).

v2 also adds Gaussian blur (`blur`, default: on for images >= 96 px, as SimCLR on CIFAR) and
the cosine learning-rate schedule (the trainer's `WarmupCosine`, see the recipes). v1's views:
crop (scale 0.2-1), flip, colour jitter 0.4 (all four, always), greyscale p=0.2; v2's:
crop (0.2-1), flip, jitter (0.4, 0.4, 0.4, 0.1) with p=0.8, greyscale p=0.2, blur p=0.5.

Batch-norm leakage (MoCo section 3.3). With per-device BN, a query and its positive key are
normalised with statistics of the same few images (32 per GPU in MoCo), which lets the model
recognise "the key from my own BN batch" instead of learning a representation. MoCo's
shuffle-BN computes the keys in BN batches made of OTHER images than the query's BN batch.
Here (`shuffle_bn`, default on):
- Under tf.distribute with per-replica BN (R replicas, sync_bn off): the key views of the
  global batch are gathered, put in a fixed interleaved order (`interleave`: with T query BN
  batches of g images, global example e = b*g + a goes to slot a*T + b) so that every
  replica's key BN batch holds g/T images of each query BN batch, encoded, gathered back and
  un-permuted. A fixed interleave
  instead of MoCo's random permutation: the data are already shuffled, what matters is that
  the key BN batches are different image sets from the query BN batches (overlap 1/R, as with
  a random shuffle in expectation), and it needs no seed shared by the replicas.
- On one device there is one BN batch, so there is nothing to shuffle and MoCo's original leak
  exists (batch-level statistics shared by a query and its key), unless `bn_splits` G > 1:
  then both encoders normalise G sub-batches separately (MoCo's CIFAR demo "SplitBatchNorm")
  and the keys are interleaved across the G sub-batches the same way (R * G groups in all).
  The CIFAR recipe uses G = 8 (sub-batches of 32, MoCo's per-GPU batch).
- With `sync_bn` (synchronised BN), every BN batch is the GLOBAL batch for queries and keys
  alike, so there are no per-device sub-batches to leak through; shuffling would change
  nothing (the statistics of a permuted global batch are the same), so it is skipped and
  `bn_splits` must be 1. This is how SimCLR (Chen et al. 2020, section 2.2, "Global BN")
  handles the same leak; what remains is the batch-level signal any single BN batch has (as on one device).
tests/test_moco.py checks that the shuffled keys equal a reference computed BN-batch by BN-batch
and that 2 replicas with shuffle-BN compute the same loss as 1 device with bn_splits=2.

The exported encoder is the query encoder `self.encoder`; the key encoder, key projector and
queue are non-trainable weights of the method (saved in checkpoints, not exported).
"""
import dataclasses

import keras
import tensorflow as tf
from keras import layers

from zoo import augment, losses, momentum
from zoo.memory_bank import FeatureQueue
from zoo.methods.base import MethodConfig, SSLMethod
from zoo.backbones import build_backbone
from zoo.registry import register_method


@dataclasses.dataclass
class MoCoConfig(MethodConfig):
    version: int = 2                   # 1: MoCo (linear head, t=0.07); 2: MoCo v2 (MLP head, t=0.2, blur)
    embedding_dim: int = 128
    projection_hidden_dim: int = 0     # v2's MLP hidden width; 0: the encoder's feature dim (2048 for ResNet-50)
    temperature: float | None = None   # None: 0.07 (v1) / 0.2 (v2)
    queue_size: int = 4096             # K: 65536 in the ImageNet recipe, 4096 for CIFAR-sized runs
    key_momentum: float = 0.999        # m of the key encoder's EMA
    shuffle_bn: bool = True            # key BN batches of other images than the query's (see docstring)
    bn_splits: int = 1                 # BN sub-batches per replica (one device: >1 makes shuffle-BN possible)
    crop_scale: tuple = (0.2, 1.0)
    blur: bool | None = None           # None: v2 and images >= 96 px (no blur on 32 px CIFAR, as SimCLR)
    queue_seed: int = 0                # the queue's random unit-vector initialisation


def moco_head(input_dim, hidden_dim, output_dim, mlp, name):
    """MoCo's projection: v1 one linear layer; v2 Linear -> ReLU -> Linear (no batch norm)."""
    inputs = keras.Input((input_dim,))
    x = inputs
    if mlp:
        x = layers.ReLU(name=f"{name}_relu")(layers.Dense(hidden_dim, name=f"{name}_dense1")(x))
    x = layers.Dense(output_dim, name=f"{name}_out")(x)
    return keras.Model(inputs, x, name=name)


def interleave(total, groups):
    """Slot order of shuffle-BN: slot s = a * groups + b holds example b * (total // groups) + a,
    so consecutive runs of total // groups slots (the key BN batches) take examples from every
    one of the `groups` contiguous query BN batches. Returns (perm, inverse): example perm[s]
    sits in slot s, example e in slot inverse[e]. Integer tensors [total]."""
    r = tf.range(total)
    perm = tf.reshape(tf.transpose(tf.reshape(r, [groups, -1])), [-1])
    inverse = tf.reshape(tf.transpose(tf.reshape(r, [-1, groups])), [-1])
    return perm, inverse


def _l2(x):
    return tf.math.l2_normalize(tf.cast(x, tf.float32), axis=1)


def _split_apply(fn, x, splits):
    """fn on `splits` equal consecutive sub-batches of x (separate BN batches), concatenated."""
    if splits == 1:
        return fn(x)
    n = x.shape[0]
    if n is not None and n % splits:
        raise ValueError(f"moco: a (per-replica) batch of {n} does not split into bn_splits={splits} equal BN "
                         f"batches; use a batch size divisible by {splits} per replica, or another bn_splits "
                         "(e.g. --set method_config.bn_splits=1).")
    return tf.concat([fn(part) for part in tf.split(x, splits, axis=0)], axis=0)


@register_method("moco")
class MoCo(SSLMethod):
    Config = MoCoConfig
    metric_names = ("contrastive_accuracy",)

    @property
    def temperature(self):
        c = self.config
        return c.temperature if c.temperature is not None else (0.07 if c.version == 1 else 0.2)

    def build_heads(self):
        c = self.config
        if c.version not in (1, 2):
            raise ValueError(f"moco: version={c.version!r}; choose 1 or 2.")
        if c.bn_splits < 1 or (c.sync_bn and c.bn_splits != 1):
            raise ValueError(f"moco: bn_splits={c.bn_splits}; must be >= 1, and 1 with sync_bn (synchronised BN "
                             "already normalises over the global batch).")
        hidden = c.projection_hidden_dim or self.feature_dim
        mlp = c.version == 2
        self.projector = moco_head(self.feature_dim, hidden, c.embedding_dim, mlp, name="query_projector")
        # The key encoder: the same architecture, initialised equal to the query encoder, no gradient.
        self.key_encoder = build_backbone(c.backbone, width=c.width, image_size=c.image_size, stem=c.stem,
                                          sync_bn=c.sync_bn, mean=c.mean, std=c.std)
        self.key_projector = moco_head(self.feature_dim, hidden, c.embedding_dim, mlp, name="key_projector")
        momentum.copy_weights([self.key_encoder, self.key_projector], [self.encoder, self.projector])
        momentum.freeze([self.key_encoder, self.key_projector])
        self.queue = FeatureQueue(c.queue_size, c.embedding_dim, seed=c.queue_seed, name="moco_queue")

    # --- views ----------------------------------------------------------------------------
    def _view(self, x, seed):
        c = self.config
        if c.version == 2:
            blur = c.blur if c.blur is not None else c.image_size >= 96
            return augment.simclr_view(x, c.image_size, seed, crop_scale=tuple(c.crop_scale), jitter_strength=0.5,
                                       jitter_p=0.8, grayscale_p=0.2, blur=blur)
        # v1 (the paper's code): crop, greyscale p=0.2, ColorJitter(0.4, 0.4, 0.4, 0.4), flip.
        s_crop, s_flip, s_jit, s_gray, s_blur = augment.split_seed(seed, 5)
        x = augment.random_resized_crop(x, c.image_size, s_crop, scale=tuple(c.crop_scale))
        x = augment.color_jitter(x, s_jit, 0.4, 0.4, 0.4, 0.4)
        gray = tf.random.stateless_uniform(tf.shape(x)[:1], s_gray) < 0.2
        x = tf.where(gray[:, None, None, None], augment.grayscale(x), x)
        if c.blur:
            x = augment.gaussian_blur(x, s_blur)
        return augment.random_flip(x, s_flip)

    def make_views(self, images, labels, seed):
        x = augment.to_float(images)
        s_q, s_k = augment.split_seed(seed, 2)
        return {"query": self._view(x, s_q), "key": self._view(x, s_k)}

    # --- forward --------------------------------------------------------------------------
    def _bn_splits(self, training):
        return self.config.bn_splits if training else 1

    def embed_queries(self, x, training=False):
        """L2-normalised query embeddings q [B, D] (gradient flows into the query encoder)."""
        net = lambda v: self.projector(self.encoder(v, training=training), training=training)  # noqa: E731
        return _l2(_split_apply(net, x, self._bn_splits(training)))

    def embed_keys(self, x, training=False):
        """L2-normalised keys k [B, D] of the LOCAL key views, no gradient; with shuffle-BN in
        training mode each key is computed in a BN batch of other images than its query's."""
        c = self.config
        splits = self._bn_splits(training)
        net = lambda v: _l2(self.key_projector(self.key_encoder(v, training=training), training=training))  # noqa: E731
        x = tf.stop_gradient(x)
        ctx = tf.distribute.get_replica_context()
        replicas = ctx.num_replicas_in_sync if ctx is not None else 1
        groups = replicas * splits
        if not (training and c.shuffle_bn and not c.sync_bn and groups > 1):
            return tf.stop_gradient(_split_apply(net, x, splits))
        n = tf.shape(x)[0]
        if replicas > 1:
            x_all, offset = losses.gather_across_replicas(x)
        else:
            x_all, offset = x, 0
        perm, inverse = interleave(tf.shape(x_all)[0], groups)
        local_slots = offset + tf.range(n)
        keys_in_slots = _split_apply(net, tf.gather(x_all, tf.gather(perm, local_slots)), splits)
        if replicas > 1:
            keys_in_slots, _ = losses.gather_across_replicas(keys_in_slots)
        return tf.stop_gradient(tf.gather(keys_in_slots, tf.gather(inverse, offset + tf.range(n))))

    def step_forward(self, views, training=False):
        q = self.embed_queries(views["query"], training=training)
        k = self.embed_keys(views["key"], training=training)
        logits, labels = losses.moco_logits(q, k, self.queue.read(), self.temperature)
        loss = losses.cross_entropy(labels, logits)
        return loss, {"contrastive_accuracy": losses.accuracy(labels, logits)}, k

    def pretext_loss(self, views, training=False):
        loss, metrics, _ = self.step_forward(views, training)
        return loss, metrics

    def momentum_update(self, m=None):
        """The key encoder's EMA step towards the query encoder (m: default config.key_momentum)."""
        targets, onlines = momentum.momentum_pairs([self.key_encoder, self.key_projector],
                                                   [self.encoder, self.projector])
        return momentum.ema_update(targets, onlines, self.config.key_momentum if m is None else m)

    def after_update(self, views, keys, updated):
        # The key encoder follows the updated query encoder (m = 1 on batches where the optimizer
        # only accumulated gradients or skipped a non-finite step), then the batch's keys of all
        # replicas replace the oldest queue entries, after the loss has read the old queue.
        self.momentum_update(tf.where(updated, tf.constant(self.config.key_momentum, tf.float32), 1.0))
        self.queue.enqueue(keys)
