"""MoCo v3: An Empirical Study of Training Self-Supervised Vision Transformers (Chen, Xie, He,
ICCV 2021), with the ResNet backbones of the zoo (the paper reports ResNet-50 too).

Views: two augmentations of every image, BYOL's (the official code's): crop (scale 0.08-1),
flip, colour jitter (0.4, 0.4, 0.2, 0.1) with p=0.8, greyscale p=0.2, Gaussian blur with p
1.0 / 0.1 and solarization with p 0.0 / 0.2 for the two views (`augment.byol_view`).

Forward: the query network, encoder f_q = `self.encoder` -> projector (Linear -> BN -> ReLU
... -> Linear -> BN without affine; 4096-d hidden, 256-d output) -> predictor (2 layers, 4096-d
hidden, the same output BN), gives q; the key network, `key_encoder` + `key_projector` (f_q's
encoder and projector architecture, no predictor), gives k and gets no gradient.

Loss (paper algorithm 1, `losses.mocov3_loss`): symmetric InfoNCE
    ctr(q1, k2) + ctr(q2, k1),   ctr(q, k) = 2t * CE(q k^T / t, labels = own image),
with q and k L2-normalised and the keys of the GLOBAL batch as the candidates: every key is
gathered from every replica (as the official `concat_all_gather`), so each query has 1 positive
(the key of the other view of its own image) and N - 1 negatives for a global batch of N
images, on any number of replicas. No queue (large batches make it unnecessary). The 2t
factor keeps the gradient's scale independent of t. Temperature 1.0 for ResNet on ImageNet
(official code), 0.2 for ViT and for CIFAR (solo-learn).

Key network update, after every optimizer step (zoo.momentum.ema_update): theta_k <- m theta_k
+ (1 - m) theta_q with m on a cosine from 0.99 to 1 over the run (`total_steps`; the official
`--moco-m-cos`), read before the step is counted (m = 0.99 at the first step); with gradient
accumulation the keys move only on the batches where the optimizer changed the weights. The
official code updates the key network at the start of each step, with the query weights of
the previous step's update: the same weights as here at the end of the previous step. Keys are
computed in training mode (batch statistics), as in the official code.

Differences from the paper: both views go through each network as one batch of 2N (one
batch-norm batch; the official code runs each view on its own); colour jitter in a fixed
order. The projector has 3 layers in the paper's text (its ViT setting) and 2 in the official
ResNet code (`projection_layers`; the ImageNet ResNet-50 recipe uses 2). The paper's optimizer
for ResNet-50 (LARS lr 0.3 x B/256 (300 epochs; 0.6 for 100), weight decay 1e-6 ... 1.5e-6,
10 warm-up epochs, batch 4096) is in the ImageNet recipe. The exported encoder is f_q.
"""
import dataclasses

import tensorflow as tf

from zoo import augment, losses, momentum
from zoo.backbones import build_backbone
from zoo.heads import mlp_head
from zoo.methods.base import MethodConfig, SSLMethod
from zoo.registry import register_method


@dataclasses.dataclass
class MoCoV3Config(MethodConfig):
    projection_hidden_dim: int = 4096
    projection_dim: int = 256
    projection_layers: int = 3         # the paper's text; the official ResNet code uses 2
    prediction_hidden_dim: int = 4096
    temperature: float = 1.0           # ResNet on ImageNet; 0.2 for ViT and on CIFAR
    base_momentum: float = 0.99        # m of the key network's EMA at the start of the run
    final_momentum: float = 1.0        # m at the end (cosine schedule)
    crop_scale: tuple = (0.08, 1.0)
    blur_p: tuple = (1.0, 0.1)         # Gaussian blur probability of view a, view b
    solarize_p: tuple = (0.0, 0.2)     # solarization probability of view a, view b


@register_method("mocov3")
class MoCoV3(SSLMethod):
    Config = MoCoV3Config
    metric_names = ("key_momentum",)

    def build_heads(self):
        c = self.config
        projector = lambda name: mlp_head(self.feature_dim, c.projection_hidden_dim, c.projection_dim,  # noqa: E731
                                          num_layers=c.projection_layers, output_bn=True, sync_bn=c.sync_bn, name=name)
        self.projector = projector("projector")
        self.predictor = mlp_head(c.projection_dim, c.prediction_hidden_dim, c.projection_dim, output_bn=True,
                                  sync_bn=c.sync_bn, name="predictor")
        # The key network: the query encoder + projector's architecture, starting equal, no gradient.
        self.key_encoder = build_backbone(c.backbone, width=c.width, image_size=c.image_size, stem=c.stem,
                                          sync_bn=c.sync_bn, mean=c.mean, std=c.std)
        self.key_projector = projector("key_projector")
        momentum.copy_weights([self.key_encoder, self.key_projector], [self.encoder, self.projector])
        momentum.freeze([self.key_encoder, self.key_projector])

    def make_views(self, images, labels, seed):
        c = self.config
        return augment.view_pair(images, seed, lambda x, s, i: augment.byol_view(
            x, c.image_size, s, crop_scale=c.crop_scale, blur_p=c.blur_p[i], solarize_p=c.solarize_p[i]))

    def key_momentum(self):
        """m at the current point of the run: cosine from base_momentum to final_momentum."""
        c = self.config
        return momentum.cosine_schedule(c.base_momentum, c.final_momentum, self.training_progress())

    def step_forward(self, views, training=False):
        n = tf.shape(views["view_a"])[0]
        x = tf.concat([views["view_a"], views["view_b"]], 0)
        q = self.predictor(self.projector(self.encoder(x, training=training), training=training), training=training)
        k = tf.stop_gradient(self.key_projector(self.key_encoder(x, training=training), training=training))
        loss = losses.mocov3_loss(q[:n], q[n:], k[:n], k[n:], self.config.temperature)
        m = self.key_momentum()  # read before the optimizer counts this step
        return loss, {"key_momentum": m}, m

    def pretext_loss(self, views, training=False):
        loss, metrics, _ = self.step_forward(views, training)
        return loss, metrics

    def momentum_update(self, m):
        """The key network's EMA step towards the query encoder + projector."""
        targets, onlines = momentum.momentum_pairs([self.key_encoder, self.key_projector],
                                                   [self.encoder, self.projector])
        return momentum.ema_update(targets, onlines, m)

    def after_update(self, views, m, updated):
        # m = 1 (no move) on batches where the optimizer only accumulated or skipped a step.
        self.momentum_update(tf.where(updated, m, 1.0))
