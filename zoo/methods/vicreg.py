"""VICReg: Variance-Invariance-Covariance Regularization for Self-Supervised Learning (Bardes,
Ponce, LeCun, ICLR 2022).

Two random views of every image -> encoder f -> expander h: 3 linear layers (8192 units on
ImageNet), the first two followed by batch norm and ReLU -> z_a, z_b [N, D]. The loss (eq. 6,
`zoo.losses.vicreg_loss`) has three terms, each computed on the embeddings as they are (no
normalisation):
- invariance s(z_a, z_b): the mean squared error between the two views' embeddings;
- variance v(z) = 1/D sum_j max(0, 1 - sqrt(Var(z^j) + eps)), eps = 1e-4: a hinge that keeps
  the batch standard deviation of every dimension at 1 or more (prevents collapse);
- covariance c(z) = 1/D sum_{i != j} Cov(z)_ij^2: decorrelates the dimensions;
    L = 25 s(z_a, z_b) + 25 [v(z_a) + v(z_b)] + 1 [c(z_a) + c(z_b)].
No negatives, no momentum encoder, no predictor, no stop-gradient, no weight sharing needed.

Batch statistics: under tf.distribute the variances and covariances are those of the GLOBAL
batch (the per-dimension sums, centred sums of squares and covariance sums are all-reduced; the
official code all-gathers the embeddings instead, the same numbers); 1 and 2 replicas give the
same loss and gradients (tests/test_decorrelation.py).

Differences from the paper:
- `scale_loss` multiplies the loss, 1/25 by default (an invariance weight of 1; the weights'
  ratios are the paper's). The paper trains with LARS, whose steps do not depend on the loss's
  scale; with momentum SGD the paper's scale diverges: the embeddings are not normalised, so the
  covariance term grows with the 4th power of the expander's last weights, and one step too
  large makes the next gradient larger (measured: SGD lr 0.05, momentum 0.9, batch 8, the
  harness's setting: NaN within 3 steps at scale 1, a steadily falling loss at 1/25). The
  ImageNet recipe (LARS) sets 1.
- The variance term is summed over the two branches as in eq. (6) (and solo-learn); the
  official code averages it (std_loss / 2 each), i.e. half the weight.
- The views are SimCLR's (`zoo.augment.simclr_view`: crop, flip, jitter (0.4, 0.4, 0.4, 0.1)
  with p=0.8, greyscale p=0.2, blur p=0.5 at >= 96 px), not BYOL's asymmetric pair the paper
  uses (blur 1.0 / 0.1, solarisation 0 / 0.2, saturation 0.2): the zoo has no solarisation yet.
- No bias in the expander's linear layers (the official code has them): the hidden ones are
  followed by BN, and no term changes when both views' embeddings are shifted by the same
  vector, so the output bias would get no gradient.
- The two views go through the encoder separately (two BN batches), as in the official code.
"""
import dataclasses

from zoo import augment, losses
from zoo.heads import mlp_head
from zoo.methods.base import MethodConfig, SSLMethod
from zoo.registry import register_method


@dataclasses.dataclass
class VICRegConfig(MethodConfig):
    projection_hidden_dim: int = 2048   # 8192 in the paper (ImageNet); 2048 in solo-learn's CIFAR recipe
    projection_dim: int = 2048          # 8192 in the paper
    projection_layers: int = 3
    sim_weight: float = 25.0            # lambda: invariance
    var_weight: float = 25.0            # mu: variance
    cov_weight: float = 1.0             # nu: covariance
    eps: float = 1e-4                   # inside the square root of the variance
    scale_loss: float = 0.04            # multiplies the loss: 1 with LARS (the paper), 1/25 with momentum SGD
    crop_scale: tuple = (0.08, 1.0)
    jitter_strength: float = 0.5        # (0.4, 0.4, 0.4, 0.1): BYOL's jitter but saturation 0.4
    blur: bool | None = None            # None: only for images >= 96 px


@register_method("vicreg")
class VICReg(SSLMethod):
    Config = VICRegConfig
    metric_names = ("invariance", "variance", "covariance")

    def build_heads(self):
        c = self.config
        self.projector = mlp_head(self.feature_dim, c.projection_hidden_dim, c.projection_dim,
                                  num_layers=c.projection_layers, output_bias=False, sync_bn=c.sync_bn,
                                  name="expander")

    def make_views(self, images, labels, seed):
        return augment.simclr_view_pair(images, seed, self.config)

    def embed(self, images, training=False):
        return self.projector(self.encoder(images, training=training), training=training)

    def pretext_loss(self, views, training=False):
        c = self.config
        z_a = self.embed(views["view_a"], training=training)
        z_b = self.embed(views["view_b"], training=training)
        invariance, variance, covariance = losses.vicreg_terms(z_a, z_b, eps=c.eps)
        loss = c.scale_loss * (c.sim_weight * invariance + c.var_weight * variance + c.cov_weight * covariance)
        return loss, {"invariance": invariance, "variance": variance, "covariance": covariance}
