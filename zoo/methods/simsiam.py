"""SimSiam: Exploring Simple Siamese Representation Learning (Chen & He, CVPR 2021).

Views: two augmentations of every image, MoCo v2's (paper appendix A): crop (scale 0.2-1),
flip, colour jitter (0.4, 0.4, 0.4, 0.1) with p=0.8, greyscale p=0.2, Gaussian blur
(sigma 0.1-2) with p=0.5 (`augment.byol_view` with these settings).

Forward: encoder f = `self.encoder` + projection MLP (ImageNet: 3 layers, Linear-BN-ReLU x 2 ->
Linear -> BN, 2048-d hidden and output; CIFAR: 2 layers, paper appendix D) gives z; the
prediction MLP h (bottleneck Linear 2048 -> 512 -> BN -> ReLU -> Linear 512 -> 2048, no BN on
its output) gives p = h(z). The same network processes both views.

Loss (paper algorithm 1, `losses.simsiam_loss`):
    L = D(p1, stopgrad(z2)) / 2 + D(p2, stopgrad(z1)) / 2,   D(p, z) = -cos(p, z).
No negatives, no momentum encoder: the stop-gradient is what prevents collapse (paper
section 4.1: without it the loss drops to -1 at once and the output std to 0).

The predictor's learning rate is NOT decayed (paper section 4.4 / appendix A: "fix lr" for the
predictor, which works better): `constant_lr_layers = ("predictor",)` names it, and
`zoo.optimizers.make_optimizer(constant_lr_variables=...)` keeps its rate at the schedule's
peak while the rest follows the cosine.

Differences from the paper: both views go through the network as one batch of 2N (one
batch-norm batch); colour jitter in a fixed order. The paper's optimizer (SGD lr 0.05 x B/256,
momentum 0.9, weight decay 1e-4, cosine, batch 512, 100 epochs) is in the ImageNet recipe; its
CIFAR setting (2-layer projector, lr 0.03 x B/256, weight decay 5e-4) in the CIFAR recipe,
where the blur is off at 32 px (as SimCLR on CIFAR). The exported encoder is f.
"""
import dataclasses

import tensorflow as tf

from zoo import augment, losses
from zoo.heads import mlp_head
from zoo.methods.base import MethodConfig, SSLMethod
from zoo.registry import register_method


@dataclasses.dataclass
class SimSiamConfig(MethodConfig):
    projection_hidden_dim: int = 2048
    projection_dim: int = 2048
    projection_layers: int = 3          # 2 in the paper's CIFAR experiments
    prediction_hidden_dim: int = 512    # the bottleneck
    crop_scale: tuple = (0.2, 1.0)
    blur_p: float | None = None         # None: 0.5 for images >= 96 px, else 0 (no blur on 32 px CIFAR)


@register_method("simsiam")
class SimSiam(SSLMethod):
    Config = SimSiamConfig
    # Trained at a constant learning rate (zoo.optimizers.constant_lr_variables).
    constant_lr_layers = ("predictor",)

    def build_heads(self):
        c = self.config
        self.projector = mlp_head(self.feature_dim, c.projection_hidden_dim, c.projection_dim,
                                  num_layers=c.projection_layers, output_bn=True, sync_bn=c.sync_bn, name="projector")
        self.predictor = mlp_head(c.projection_dim, c.prediction_hidden_dim, c.projection_dim, sync_bn=c.sync_bn,
                                  name="predictor")

    def make_views(self, images, labels, seed):
        c = self.config
        blur_p = c.blur_p if c.blur_p is not None else (0.5 if c.image_size >= 96 else 0.0)
        return augment.view_pair(images, seed, lambda x, s, _: augment.byol_view(
            x, c.image_size, s, crop_scale=c.crop_scale, jitter=(0.4, 0.4, 0.4, 0.1), blur_p=blur_p))

    def pretext_loss(self, views, training=False):
        n = tf.shape(views["view_a"])[0]
        x = tf.concat([views["view_a"], views["view_b"]], 0)
        z = self.projector(self.encoder(x, training=training), training=training)
        p = self.predictor(z, training=training)
        return losses.simsiam_loss(p[:n], p[n:], z[:n], z[n:]), {}
