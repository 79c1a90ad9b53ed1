"""BYOL: Bootstrap Your Own Latent, a new approach to self-supervised learning (Grill, Strub,
Altché, Tallec, Richemond, Buchatskaya, Doersch, Pires, Guo, Azar, Piot, Kavukcuoglu, Munos,
Valko, NeurIPS 2020).

Views: two augmentations t, t' of every image, asymmetric (paper table 6): crop (scale
0.08-1), flip, colour jitter (0.4, 0.4, 0.2, 0.1) with p=0.8, greyscale p=0.2, Gaussian blur
with p 1.0 for t and 0.1 for t', solarization with p 0.0 for t and 0.2 for t'
(`augment.byol_view`).

Forward: the ONLINE network, encoder f = `self.encoder` -> projector g (Linear 4096 -> BN ->
ReLU -> Linear 256) -> predictor q (the same MLP shape, 256 -> 4096 -> 256), gives p = q(g(f(v)));
the TARGET network, `target_encoder` + `target_projector` (same architecture as f and g, no
predictor), gives z' = g_xi(f_xi(v')) and gets no gradient.

Loss: the normalised MSE between the online prediction of one view and the target projection
of the other, symmetrised (paper eq. 2 and L + L~):
    L = (2 - 2 cos(p(v), z'(v'))) + (2 - 2 cos(p(v'), z'(v)))     (`losses.byol_loss`),
minimised over the online weights only. No negatives: the predictor and the slowly moving
target are what keep it from collapsing.

Target update, after every optimizer step (zoo.momentum.ema_update):
    xi <- tau xi + (1 - tau) theta,  tau = 1 - (1 - tau_base) (cos(pi k / K) + 1) / 2,
tau_base = 0.996, k the step (batches seen before this step's update, so the first update
uses tau_base), K the run's length (`total_steps`, set by the trainer: tau stays at tau_base
when it is unknown). With gradient accumulation the target moves only on the batches where
the optimizer changed the weights (tau = 1 otherwise). As in MoCo (zoo/methods/moco.py), the
target's forward runs in training mode (batch statistics) and its batch-norm moving
statistics come from its own forward passes, not from the EMA.

Differences from the paper: both views go through each network as one batch of 2N (one
batch-norm batch, as the zoo's SimCLR; the paper normalises each view on its own); colour
jitter in a fixed order (the paper: random order). The paper's optimizer (LARS, lr 0.2 x B/256,
weight decay 1.5e-6, 10 warm-up epochs, cosine, batch 4096) is in the ImageNet recipe; on
32 px CIFAR the recipe drops the blur (as solo-learn and lightly do) and keeps solarization
0.0 / 0.2. The exported encoder is the online encoder.
"""
import dataclasses

import tensorflow as tf

from zoo import augment, losses, momentum
from zoo.backbones import build_backbone
from zoo.heads import mlp_head
from zoo.methods.base import MethodConfig, SSLMethod
from zoo.registry import register_method


@dataclasses.dataclass
class BYOLConfig(MethodConfig):
    projection_hidden_dim: int = 4096
    projection_dim: int = 256
    prediction_hidden_dim: int = 4096
    base_momentum: float = 0.996       # tau_base of the target EMA
    final_momentum: float = 1.0        # tau at the end of the run (cosine schedule)
    crop_scale: tuple = (0.08, 1.0)
    blur_p: tuple = (1.0, 0.1)         # Gaussian blur probability of view a, view b
    solarize_p: tuple = (0.0, 0.2)     # solarization probability of view a, view b


@register_method("byol")
class BYOL(SSLMethod):
    Config = BYOLConfig
    metric_names = ("target_momentum",)

    def build_heads(self):
        c = self.config
        # No output bias on the projector: the predictor's first Linear + BN cancels it in the
        # online branch (it would get no gradient), so the target's copy would stay at zero.
        projector = lambda name: mlp_head(self.feature_dim, c.projection_hidden_dim, c.projection_dim,  # noqa: E731
                                          output_bias=False, sync_bn=c.sync_bn, name=name)
        self.projector = projector("projector")
        self.predictor = mlp_head(c.projection_dim, c.prediction_hidden_dim, c.projection_dim, sync_bn=c.sync_bn,
                                  name="predictor")
        # The target network: the online encoder + projector's architecture, starting equal, no gradient.
        self.target_encoder = build_backbone(c.backbone, width=c.width, image_size=c.image_size, stem=c.stem,
                                             sync_bn=c.sync_bn, mean=c.mean, std=c.std)
        self.target_projector = projector("target_projector")
        momentum.copy_weights([self.target_encoder, self.target_projector], [self.encoder, self.projector])
        momentum.freeze([self.target_encoder, self.target_projector])

    def make_views(self, images, labels, seed):
        c = self.config
        return augment.view_pair(images, seed, lambda x, s, i: augment.byol_view(
            x, c.image_size, s, crop_scale=c.crop_scale, blur_p=c.blur_p[i], solarize_p=c.solarize_p[i]))

    def target_momentum(self):
        """tau at the current point of the run: cosine from base_momentum to final_momentum."""
        c = self.config
        return momentum.cosine_schedule(c.base_momentum, c.final_momentum, self.training_progress())

    def step_forward(self, views, training=False):
        n = tf.shape(views["view_a"])[0]
        x = tf.concat([views["view_a"], views["view_b"]], 0)
        p = self.predictor(self.projector(self.encoder(x, training=training), training=training), training=training)
        z = tf.stop_gradient(self.target_projector(self.target_encoder(x, training=training), training=training))
        loss = losses.byol_loss(p[:n], p[n:], z[:n], z[n:])
        # tau of this step, read before the optimizer counts it (k = batches seen before it).
        tau = self.target_momentum()
        return loss, {"target_momentum": tau}, tau

    def pretext_loss(self, views, training=False):
        loss, metrics, _ = self.step_forward(views, training)
        return loss, metrics

    def momentum_update(self, tau):
        """The target's EMA step towards the online encoder + projector."""
        targets, onlines = momentum.momentum_pairs([self.target_encoder, self.target_projector],
                                                   [self.encoder, self.projector])
        return momentum.ema_update(targets, onlines, tau)

    def after_update(self, views, tau, updated):
        # tau = 1 (no move) on batches where the optimizer only accumulated or skipped a step.
        self.momentum_update(tf.where(updated, tau, 1.0))
