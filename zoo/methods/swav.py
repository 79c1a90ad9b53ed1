"""SwAV: Unsupervised Learning of Visual Features by Contrasting Cluster Assignments (Caron, Misra,
Mairal, Goyal, Bojanowski, Joulin, NeurIPS 2020).

Views: multi-crop (paper section 3.2, `augment.multi_crop`): 2 large crops (224 px, area
0.14-1) and 6 small crops (96 px, area 0.05-0.14) of every image, each with SimCLR's colour
distortion (strength 1 on ImageNet), greyscale and blur.

Forward: encoder f -> projector (Linear 2048 -> BN -> ReLU -> Linear 128) -> z, L2-normalised
-> scores z.c_k against K prototypes c_1..c_K (3000 on ImageNet; a linear layer without bias
whose columns are unit vectors). The encoder runs once per crop size on all crops of that size
(`heads.multi_crop_forward`), the projector once on all crops.

Codes: for each large crop, Sinkhorn-Knopp (`losses.sinkhorn`, 3 iterations, epsilon 0.05) turns
the scores of the GLOBAL batch into soft assignments q that split the batch equally among the
prototypes (the equipartition that prevents collapse); no gradient. Codes are computed only for
the large crops.

Loss (swapped prediction, `losses.swav_loss`): the code of each large crop is predicted from
every OTHER crop (large and small) by softmax(scores / 0.1); cross-entropy, averaged over the
pairs and the batch.

What makes it work:
- the prototypes are projected back onto the unit sphere after every optimizer step (a Keras
  `UnitNorm` constraint, applied by the optimizer right after its update; the official code
  normalises before each forward pass: the same weights at every forward);
- the prototypes get no gradient during the first `freeze_prototypes_steps` optimizer updates
  (paper: the first epoch; 0 by default since an epoch's length depends on the data: the recipes
  set one epoch);
- small batches: `queue_size` > 0 keeps the projections of the large crops of the last batches
  (zoo.memory_bank.FeatureQueue, filled on every batch); from update `queue_start_steps` on, once
  the queue holds that many real projections, Sinkhorn runs on the queue's scores and the
  batch's together and the batch keeps its rows (official code: queue 3840 from epoch 15 for
  batch 256). Under N replicas each uses 1/N of the queue, so Sinkhorn sees the whole queue once,
  as one device does.

Differences from the paper: the colour jitter has a fixed order; the official code's learning
rate schedule and LARS are in the recipes; mixed precision computes the scores and Sinkhorn in
float32 (the paper: fp16 with apex).
"""
import dataclasses

import keras
import tensorflow as tf

from zoo import augment, losses
from zoo.heads import mlp_head, multi_crop_forward
from zoo.memory_bank import FeatureQueue
from zoo.methods.base import MethodConfig, SSLMethod
from zoo.registry import register_method


@dataclasses.dataclass
class SwAVConfig(MethodConfig):
    projection_hidden_dim: int = 2048
    projection_dim: int = 128
    num_prototypes: int = 3000
    temperature: float = 0.1
    sinkhorn_epsilon: float = 0.05
    sinkhorn_iterations: int = 3
    num_large_crops: int = 2
    num_small_crops: int = 6
    small_crop_size: int | None = None      # None: image_size // 2 (the ImageNet recipe sets 96)
    large_crop_scale: tuple = (0.14, 1.0)
    small_crop_scale: tuple = (0.05, 0.14)
    jitter_strength: float = 1.0            # ImageNet; 0.5 on CIFAR
    blur: bool | None = None                # None: blur for crops >= 96 px
    freeze_prototypes_steps: int = 0        # optimizer updates without prototype gradient (recipes: 1 epoch)
    queue_size: int = 0                     # 0: no queue (paper: 3840 for batches of 256)
    queue_start_steps: int = 0              # first update whose codes use the queue


@register_method("swav")
class SwAV(SSLMethod):
    Config = SwAVConfig
    metric_names = ("code_entropy",)

    def build_heads(self):
        c = self.config
        self.projector = mlp_head(self.feature_dim, c.projection_hidden_dim, c.projection_dim, sync_bn=c.sync_bn,
                                  name="projector")
        self.prototypes = keras.layers.Dense(c.num_prototypes, use_bias=False, name="prototypes",
                                             kernel_constraint=keras.constraints.UnitNorm(axis=0))
        self.prototypes.build((None, c.projection_dim))
        self.prototypes.kernel.assign(tf.math.l2_normalize(self.prototypes.kernel, axis=0))
        self.queue = None
        if c.queue_size:
            self.queue = FeatureQueue(c.queue_size, c.num_large_crops * c.projection_dim, name="swav_queue")
            # How many projections the queue has received (it starts with random vectors).
            self.queue_filled = self.add_weight(name="queue_filled", shape=(), initializer="zeros", dtype="int64",
                                                trainable=False, aggregation="only_first_replica")

    @property
    def small_crop_size(self):
        c = self.config
        return c.small_crop_size or c.image_size // 2

    def make_views(self, images, labels, seed):
        c = self.config
        large, small = augment.multi_crop(
            augment.to_float(images), seed, c.image_size, self.small_crop_size, c.num_large_crops,
            c.num_small_crops, c.large_crop_scale, c.small_crop_scale,
            large_kwargs=dict(jitter_strength=c.jitter_strength, blur=c.blur),
            small_kwargs=dict(jitter_strength=c.jitter_strength, blur=c.blur))
        return {"large": large, "small": small} if c.num_small_crops else {"large": large}

    # --- forward --------------------------------------------------------------------------
    def _updates(self):
        """Optimizer updates so far (0 before compile)."""
        if getattr(self, "optimizer", None) is None:
            return tf.constant(0, tf.int64)
        return tf.cast(self.optimizer.iterations, tf.int64)

    def embed(self, views, training=False):
        """L2-normalised projections z [V, B, D] of every crop, the large crops first."""
        groups = [views["large"]] + ([views["small"]] if "small" in views else [])
        z = multi_crop_forward(self.encoder, groups, self.projector, training=training)
        return tf.math.l2_normalize(tf.cast(z, tf.float32), axis=-1)

    def prototype_kernel(self):
        """The prototypes [D, K] (unit columns), without gradient during the freeze."""
        kernel = self.prototypes.kernel
        frozen = self._updates() < self.config.freeze_prototypes_steps
        return tf.where(frozen, tf.stop_gradient(kernel), kernel)

    def codes(self, z_large, scores_large):
        """Sinkhorn codes [A, B, K] of the large crops, with the queue's scores when it is on."""
        c = self.config
        codes = [losses.sinkhorn(s, c.sinkhorn_epsilon, c.sinkhorn_iterations) for s in tf.unstack(scores_large)]
        if self.queue is None:
            return tf.stack(codes)
        # This replica's share of the queue: the replicas together hold every queue row once.
        ctx = tf.distribute.get_replica_context()
        replicas, replica = (ctx.num_replicas_in_sync, ctx.replica_id_in_sync_group) if ctx else (1, 0)
        rows = c.queue_size // replicas
        queue = self.queue.read()[replica * rows:(replica + 1) * rows]
        queue = tf.reshape(queue, [rows, c.num_large_crops, c.projection_dim])
        kernel = tf.stop_gradient(tf.convert_to_tensor(self.prototypes.kernel))
        use = tf.logical_and(self._updates() >= c.queue_start_steps,
                             tf.convert_to_tensor(self.queue_filled) >= c.queue_size)
        n = tf.shape(scores_large)[1]
        with_queue = [losses.sinkhorn(tf.concat([tf.matmul(queue[:, a], kernel), scores_large[a]], 0),
                                      c.sinkhorn_epsilon, c.sinkhorn_iterations)[-n:]
                      for a in range(c.num_large_crops)]
        return tf.where(use, tf.stack(with_queue), tf.stack(codes))

    def step_forward(self, views, training=False):
        c = self.config
        z = self.embed(views, training=training)
        scores = tf.einsum("vbd,dk->vbk", z, tf.cast(self.prototype_kernel(), tf.float32))
        codes = self.codes(z[:c.num_large_crops], scores[:c.num_large_crops])
        loss = losses.swav_loss(scores, codes, c.temperature)
        entropy = -tf.reduce_mean(tf.reduce_sum(codes * tf.math.log(codes + 1e-12), axis=-1))
        return loss, {"code_entropy": entropy}, z[:c.num_large_crops]

    def pretext_loss(self, views, training=False):
        loss, metrics, _ = self.step_forward(views, training)
        return loss, metrics

    def after_update(self, views, z_large, updated):
        # The prototypes' unit norm is restored by their constraint inside the optimizer step.
        if self.queue is None:
            return
        # [B, A * D]: the large crops' projections of one image side by side, one queue row.
        rows = tf.reshape(tf.transpose(z_large, [1, 0, 2]), [tf.shape(z_large)[1], -1])
        self.queue.enqueue(rows)
        ctx = tf.distribute.get_replica_context()
        global_batch = tf.cast(tf.shape(rows)[0] * (ctx.num_replicas_in_sync if ctx else 1), tf.int64)
        filled = tf.minimum(tf.convert_to_tensor(self.queue_filled) + global_batch, self.config.queue_size)
        self.queue_filled.value.assign(filled)
