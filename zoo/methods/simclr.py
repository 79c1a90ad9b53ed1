"""SimCLR: A Simple Framework for Contrastive Learning of Visual Representations
(Chen, Kornblith, Norouzi, Hinton, ICML 2020).

Two random views of every image -> encoder f -> h -> projection g -> z; NT-Xent over the 2N
views of the (global) batch: each view's pair is its positive, the other 2N-2 views are its
negatives. g is thrown away after training; the encoder's h is the representation.
"""
import dataclasses

import tensorflow as tf

from zoo import augment, losses
from zoo.heads import projection_mlp
from zoo.methods.base import MethodConfig, SSLMethod
from zoo.registry import register_method


@dataclasses.dataclass
class SimCLRConfig(MethodConfig):
    temperature: float = 0.5        # 0.5 for CIFAR-size batches; the paper's ImageNet runs use 0.1
    projection_hidden_dim: int = 512
    projection_dim: int = 128
    crop_scale: tuple = (0.08, 1.0)
    jitter_strength: float = 0.5    # 0.5 on CIFAR-10, 1.0 on ImageNet (paper appendix B.9)
    blur: bool | None = None        # None: blur only for images >= 96 px, as in the paper


@register_method("simclr")
class SimCLR(SSLMethod):
    Config = SimCLRConfig
    metric_names = ("contrastive_accuracy",)

    def build_heads(self):
        c = self.config
        self.projector = projection_mlp(self.feature_dim, c.projection_hidden_dim, c.projection_dim,
                                        sync_bn=c.sync_bn)

    def make_views(self, images, labels, seed):
        c = self.config
        x = augment.to_float(images)
        seed_a, seed_b = augment.split_seed(seed, 2)
        view = lambda s: augment.simclr_view(x, c.image_size, s, crop_scale=c.crop_scale,  # noqa: E731
                                             jitter_strength=c.jitter_strength, blur=c.blur)
        return {"view_a": view(seed_a), "view_b": view(seed_b)}

    def pretext_loss(self, views, training=False):
        n = tf.shape(views["view_a"])[0]
        # One pass over both views: one BN batch of 2N, as in the paper's implementation.
        h = self.encoder(tf.concat([views["view_a"], views["view_b"]], 0), training=training)
        z = self.projector(h, training=training)
        logits, labels = losses.nt_xent_logits(z[:n], z[n:], self.config.temperature)
        loss = losses.cross_entropy(labels, logits)
        return loss, {"contrastive_accuracy": losses.accuracy(labels, logits)}
