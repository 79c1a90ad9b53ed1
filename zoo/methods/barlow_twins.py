"""Barlow Twins: Self-Supervised Learning via Redundancy Reduction (Zbontar, Jing, Misra, LeCun,
Deny, ICML 2021).

Two random views of every image -> encoder f -> projector g: 3 linear layers (8192 units on
ImageNet), the first two followed by batch norm and ReLU -> z_a, z_b [N, D]. Each embedding is
standardised per dimension over the batch (the official code's BatchNorm1d(affine=False)) and
the loss drives their cross-correlation matrix C = z_a_n^T z_b_n / N towards the identity:
    L = sum_i (1 - C_ii)^2 + lambda sum_{i != j} C_ij^2,   lambda = 0.0051
(`zoo.losses.barlow_twins_loss`): the diagonal makes the two views' embeddings agree
(invariance), the off-diagonal decorrelates the dimensions (redundancy reduction), which is
what prevents collapse without negatives, momentum encoder, predictor or stop-gradient.

What makes it work: a wide projector (performance still grows at 8192-d, paper fig. 4); the
statistics of a large batch. Under tf.distribute the standardisation and C use the GLOBAL
batch (the per-dimension sums, centred sums of squares and cross-products are all-reduced),
as the official code's all_reduce of C with synchronised BN does; 1 and 2 replicas give the
same loss and gradients (tests/test_decorrelation.py).

Differences from the paper:
- `scale_loss` multiplies the loss (1 = the paper; solo-learn's CIFAR recipe 0.1 with LARS).
  With momentum SGD it is a learning-rate factor, and it matters: unscaled, the encoder's
  gradient at initialisation is ~1000x SimCLR's (measured at batch 256, width 0.25), so the
  CIFAR recipe uses 0.001.
- The views are SimCLR's (`zoo.augment.simclr_view`: crop, flip, jitter (0.4, 0.4, 0.4, 0.1)
  with p=0.8, greyscale p=0.2, blur p=0.5 at >= 96 px), not BYOL's asymmetric pair (blur
  p=1.0 / 0.1, solarisation p=0 / 0.2, saturation 0.2): the zoo has no solarisation yet.
- The two views go through the encoder separately (two BN batches), as in the official code.
- No bias in the projector's linear layers (the official code has none either): the hidden
  ones are followed by BN, and the loss does not change when z is shifted.
"""
import dataclasses

from zoo import augment, losses
from zoo.heads import mlp_head
from zoo.methods.base import MethodConfig, SSLMethod
from zoo.registry import register_method


@dataclasses.dataclass
class BarlowTwinsConfig(MethodConfig):
    projection_hidden_dim: int = 2048   # 8192 in the paper (ImageNet); 2048 in solo-learn's CIFAR recipe
    projection_dim: int = 2048          # 8192 in the paper
    projection_layers: int = 3
    lambd: float = 0.0051               # weight of the off-diagonal (redundancy) term
    scale_loss: float = 1.0             # the paper: 1; solo-learn CIFAR: 0.1
    bn_eps: float = 1e-5                # epsilon of the per-dimension standardisation
    crop_scale: tuple = (0.08, 1.0)
    jitter_strength: float = 0.5        # (0.4, 0.4, 0.4, 0.1): BYOL's jitter but saturation 0.4
    blur: bool | None = None            # None: only for images >= 96 px


@register_method("barlow_twins")
class BarlowTwins(SSLMethod):
    Config = BarlowTwinsConfig
    metric_names = ("on_diagonal", "off_diagonal")

    def build_heads(self):
        c = self.config
        self.projector = mlp_head(self.feature_dim, c.projection_hidden_dim, c.projection_dim,
                                  num_layers=c.projection_layers, output_bias=False, sync_bn=c.sync_bn,
                                  name="projector")

    def make_views(self, images, labels, seed):
        return augment.simclr_view_pair(images, seed, self.config)

    def embed(self, images, training=False):
        return self.projector(self.encoder(images, training=training), training=training)

    def pretext_loss(self, views, training=False):
        c = self.config
        z_a = self.embed(views["view_a"], training=training)
        z_b = self.embed(views["view_b"], training=training)
        on_diagonal, off_diagonal = losses.barlow_twins_terms(z_a, z_b, eps=c.bn_eps)
        loss = c.scale_loss * (on_diagonal + c.lambd * off_diagonal)
        return loss, {"on_diagonal": on_diagonal, "off_diagonal": off_diagonal}
