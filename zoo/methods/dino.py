"""DINO: Emerging Properties in Self-Supervised Vision Transformers (Caron, Touvron, Misra, Jégou,
Mairal, Bojanowski, Joulin, ICCV 2021): self-distillation with no labels.

Views: multi-crop (`augment.multi_crop`): 2 large "global" crops (224 px, area 0.14-1 in the
official ResNet-50 command, 0.4-1 for ViTs) and 10 small "local" crops (96 px, area up to the
large crops' minimum), BYOL's augmentations (`augment.byol_view`): colour jitter (0.4, 0.4, 0.2,
0.1) with p=0.8, greyscale p=0.2, Gaussian blur p=1.0 on the first global crop, 0.1 on the
second (which is also solarized with p=0.2), 0.5 on the local crops.

Forward: the STUDENT, encoder f = `self.encoder` -> DINO head (`heads.dino_head`: 3-layer MLP
2048 hidden, GELU, bottleneck 256, L2-normalised, weight-normalised linear layer to K = 65536
outputs), sees every crop; the TEACHER, `teacher_encoder` + `teacher_head` (same architecture,
no gradient), sees only the large crops. Each encoder runs once per crop size
(`heads.multi_crop_forward`).

Loss (`losses.dino_loss`, algorithm 1): P_t = softmax((t - C) / tau_t), no gradient, is the
target of P_s = softmax(s / tau_s) of every other crop: cross-entropy over all pairs (teacher
crop a, student crop v), v != a, averaged. tau_s = 0.1.

What makes it work (avoiding collapse without negatives or predictor):
- centring: C <- m C + (1 - m) mean of the teacher outputs over the GLOBAL batch
  (`losses.dino_batch_center`, all-reduced), m = 0.9, a non-trainable variable updated after
  every batch, after the loss read the old C; it keeps one output from dominating;
- sharpening: tau_t warms up linearly from 0.04 to 0.07 over the first
  `teacher_temperature_warmup` fraction of the run (paper: 30 of 100 or 300 epochs), read from
  `training_progress()` (batches seen / total_steps, set by the trainer; while the run's length
  is unknown the progress is 0 and tau_t stays at 0.04); it keeps the outputs from becoming
  uniform;
- the teacher is an EMA of the student after every optimizer step (zoo.momentum.ema_update),
  momentum 0.996 -> 1 on a cosine schedule over the run (`momentum.cosine_schedule`, evaluated
  at the batches seen before the step). As in MoCo and BYOL here, the teacher's forward runs in
  training mode (batch statistics; the official code converts both networks' BN to SyncBN) and
  its batch-norm moving statistics are its own.

ResNet backbone (paper table 2 has ResNet-50 results): the head has no batch norm (the official
code's default `use_bn_in_head=False`, also its ResNet-50 command); `head_batch_norm` turns it on.

Differences from the paper: the official code keeps the last layer frozen during the first epoch
and clips gradients at norm 3 (neither is done here); a fixed order of the colour jitter.
The exported encoder is the student's (the paper evaluates the teacher, which is usually a
little better).
"""
import dataclasses

import tensorflow as tf

from zoo import augment, losses, momentum
from zoo.backbones import build_backbone
from zoo.heads import dino_head, multi_crop_forward
from zoo.methods.base import MethodConfig, SSLMethod
from zoo.registry import register_method


@dataclasses.dataclass
class DINOConfig(MethodConfig):
    head_hidden_dim: int = 2048
    head_bottleneck_dim: int = 256
    head_output_dim: int = 65536            # K
    head_batch_norm: bool = False
    student_temperature: float = 0.1
    warmup_teacher_temperature: float = 0.04
    teacher_temperature: float = 0.07
    teacher_temperature_warmup: float = 0.3  # fraction of the run (paper: 30 epochs of 100)
    center_momentum: float = 0.9
    base_momentum: float = 0.996            # teacher EMA, cosine schedule to final_momentum
    final_momentum: float = 1.0
    num_large_crops: int = 2
    num_small_crops: int = 10
    small_crop_size: int | None = None      # None: image_size // 2 (the ImageNet recipe sets 96)
    large_crop_scale: tuple = (0.14, 1.0)
    small_crop_scale: tuple = (0.05, 0.14)
    blur: bool | None = None                # None: blur only for crops >= 96 px


def teacher_temperature(progress, start=0.04, end=0.07, warmup=0.3):
    """tau_t: linear from `start` to `end` over the first `warmup` fraction of the run (progress
    in [0, 1]), then `end`; `warmup` 0: `end` throughout."""
    if warmup <= 0:
        return tf.constant(end, tf.float32)
    ramp = tf.minimum(tf.cast(progress, tf.float32) / warmup, 1.0)
    return start + (end - start) * ramp


@register_method("dino")
class DINO(SSLMethod):
    Config = DINOConfig
    metric_names = ("teacher_entropy",)

    def build_heads(self):
        c = self.config
        head = lambda name: dino_head(self.feature_dim, c.head_hidden_dim, c.head_bottleneck_dim,  # noqa: E731
                                      c.head_output_dim, batch_norm=c.head_batch_norm, sync_bn=c.sync_bn, name=name)
        self.head = head("dino_head")
        self.teacher_encoder = build_backbone(c.backbone, width=c.width, image_size=c.image_size, stem=c.stem,
                                              sync_bn=c.sync_bn, mean=c.mean, std=c.std)
        self.teacher_head = head("teacher_head")
        momentum.copy_weights([self.teacher_encoder, self.teacher_head], [self.encoder, self.head])
        momentum.freeze([self.teacher_encoder, self.teacher_head])
        self.center = self.add_weight(name="center", shape=(c.head_output_dim,), initializer="zeros",
                                      dtype="float32", trainable=False, autocast=False,
                                      aggregation="only_first_replica")

    @property
    def small_crop_size(self):
        c = self.config
        return c.small_crop_size or c.image_size // 2

    def make_views(self, images, labels, seed):
        c = self.config
        blur = lambda size, p: p if (c.blur if c.blur is not None else size >= 96) else 0.0  # noqa: E731
        large, small = augment.multi_crop(
            augment.to_float(images), seed, c.image_size, self.small_crop_size, c.num_large_crops,
            c.num_small_crops, c.large_crop_scale, c.small_crop_scale, view=augment.byol_view,
            large_kwargs=[dict(blur_p=blur(c.image_size, 1.0 if k == 0 else 0.1), solarize_p=0.2 if k == 1 else 0.0)
                          for k in range(c.num_large_crops)],
            small_kwargs=dict(blur_p=blur(self.small_crop_size, 0.5)))
        return {"large": large, "small": small} if c.num_small_crops else {"large": large}

    # --- forward --------------------------------------------------------------------------
    def teacher_temperature(self):
        c = self.config
        return teacher_temperature(self.training_progress(), c.warmup_teacher_temperature, c.teacher_temperature,
                                   c.teacher_temperature_warmup)

    def student_logits(self, views, training=False):
        """[V, B, K] for every crop, the large crops first."""
        groups = [views["large"]] + ([views["small"]] if "small" in views else [])
        return multi_crop_forward(self.encoder, groups, self.head, training=training)

    def teacher_logits(self, views, training=False):
        """[A, B, K] for the large crops only, no gradient."""
        large = tf.stop_gradient(views["large"])
        return tf.stop_gradient(multi_crop_forward(self.teacher_encoder, [large], self.teacher_head, training=training))

    def step_forward(self, views, training=False):
        c = self.config
        student = self.student_logits(views, training=training)
        teacher = self.teacher_logits(views, training=training)
        temperature = self.teacher_temperature()
        center = tf.convert_to_tensor(self.center)
        loss = losses.dino_loss(student, teacher, center, c.student_temperature, temperature)
        targets = tf.nn.softmax((tf.cast(teacher, tf.float32) - center) / temperature, axis=-1)
        entropy = -tf.reduce_mean(tf.reduce_sum(targets * tf.math.log(targets + 1e-12), axis=-1))
        # The teacher momentum of this step, at the batches seen before its update.
        m = momentum.cosine_schedule(c.base_momentum, c.final_momentum, self.training_progress())
        return loss, {"teacher_entropy": entropy}, (losses.dino_batch_center(teacher), m)

    def pretext_loss(self, views, training=False):
        loss, metrics, _ = self.step_forward(views, training)
        return loss, metrics

    def momentum_update(self, m):
        targets, onlines = momentum.momentum_pairs([self.teacher_encoder, self.teacher_head], [self.encoder, self.head])
        return momentum.ema_update(targets, onlines, m)

    def after_update(self, views, aux, updated):
        batch_center, m = aux
        cm = self.config.center_momentum
        self.center.value.assign(cm * tf.convert_to_tensor(self.center) + (1.0 - cm) * batch_center)
        # The teacher follows the updated student (m = 1 on batches where the optimizer only
        # accumulated gradients or skipped a step).
        self.momentum_update(tf.where(updated, m, 1.0))
