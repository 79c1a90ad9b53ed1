"""NNCLR: With a Little Help from My Friends: Nearest-Neighbor Contrastive Learning of Visual
Representations (Dwibedi, Aytar, Tompson, Sermanet, Zisserman, ICCV 2021).

Two random views of every image -> encoder f -> projector g (3 layers, hidden 2048, output 256,
BN after every layer) -> z_1, z_2, and a predictor q (2 layers, hidden 4096) -> p_1, p_2.
A support set Q holds the L2-normalised projections of earlier batches (a FIFO queue,
`zoo.memory_bank.FeatureQueue`, 98,304 entries on ImageNet). Each view's projection is replaced
by its nearest neighbour in Q (cosine similarity), NN(z, Q), a constant for the gradient (the
queue is not trained), which becomes the positive of the OTHER view's prediction:
    L_i = -log exp(NN(z_1i, Q) . p_2i / t) / sum_k exp(NN(z_1i, Q) . p_2k / t)
(eq. 2 with the predictor, `zoo.losses.nnclr_loss`), k over the GLOBAL batch (the predictions of
the other replicas are gathered), vectors L2-normalised, temperature t = 0.1; symmetrised,
L = (L(NN(z_1), p_2) + L(NN(z_2), p_1)) / 2. The gradient reaches the network only through the
predictions p, so the positive comes from another image of the data set than the anchor's
views: the "semantic" variation that augmentations alone do not give.
After the optimizer step the batch's z_1 (normalised, of every replica, in global order:
FeatureQueue.enqueue gathers them) replace the oldest entries of Q, so the loss always reads the
queue as it was before the step.

Differences from the paper:
- The paper symmetrises by adding the other direction of the same pair (each p_2i against the
  NN(z_1k) of the batch); here, as solo-learn and lightly do, by swapping the views, so both
  views' predictions get a gradient.
- The projector's last BN has no scale and offset (`zoo.heads.mlp_head`, as SimSiam's);
  solo-learn's and lightly's have them. No bias in linear layers followed by BN.
- The views are SimCLR's (`zoo.augment.simclr_view`), not BYOL's asymmetric pair with
  solarisation the paper uses: the zoo has no solarisation yet.
- Default queue 8192 (CIFAR-sized runs; lightly's CIFAR-10 benchmark uses 4096-8192, solo-learn
  65536); the ImageNet recipe sets the paper's 98,304. The queue starts with random unit
  vectors, as solo-learn's and MoCo's do.
"""
import dataclasses

import tensorflow as tf

from zoo import augment, losses
from zoo.heads import mlp_head
from zoo.memory_bank import FeatureQueue
from zoo.methods.base import MethodConfig, SSLMethod
from zoo.registry import register_method


@dataclasses.dataclass
class NNCLRConfig(MethodConfig):
    projection_hidden_dim: int = 2048
    projection_dim: int = 256
    projection_layers: int = 3
    prediction_hidden_dim: int = 4096
    temperature: float = 0.1            # 0.1 in the paper (ImageNet); solo-learn's CIFAR recipe: 0.2
    queue_size: int = 8192              # the support set; 98,304 in the paper (ImageNet recipe)
    queue_seed: int = 0                 # the queue's random unit-vector initialisation
    crop_scale: tuple = (0.08, 1.0)
    jitter_strength: float = 0.5        # (0.4, 0.4, 0.4, 0.1): BYOL's jitter but saturation 0.4
    blur: bool | None = None            # None: only for images >= 96 px


@register_method("nnclr")
class NNCLR(SSLMethod):
    Config = NNCLRConfig
    metric_names = ("contrastive_accuracy",)

    def build_heads(self):
        c = self.config
        self.projector = mlp_head(self.feature_dim, c.projection_hidden_dim, c.projection_dim,
                                  num_layers=c.projection_layers, output_bn=True, sync_bn=c.sync_bn, name="projector")
        self.predictor = mlp_head(c.projection_dim, c.prediction_hidden_dim, c.projection_dim, num_layers=2,
                                  sync_bn=c.sync_bn, name="predictor")
        self.queue = FeatureQueue(c.queue_size, c.projection_dim, seed=c.queue_seed, name="support_set")

    def make_views(self, images, labels, seed):
        return augment.simclr_view_pair(images, seed, self.config)

    def project(self, images, training=False):
        """(z, p): the projection and the prediction of a batch of views."""
        z = self.projector(self.encoder(images, training=training), training=training)
        return z, self.predictor(z, training=training)

    def step_forward(self, views, training=False):
        t = self.config.temperature
        z_a, p_a = self.project(views["view_a"], training=training)
        z_b, p_b = self.project(views["view_b"], training=training)
        support = self.queue.read()
        nn_a, _ = losses.nearest_neighbours(z_a, support)
        nn_b, _ = losses.nearest_neighbours(z_b, support)
        logits, labels = losses.nnclr_logits(nn_a, p_b, t)
        loss_ab = losses.cross_entropy(labels, logits)
        loss = 0.5 * (loss_ab + losses.nnclr_loss(nn_b, p_a, t))
        z_a = tf.stop_gradient(tf.math.l2_normalize(tf.cast(z_a, tf.float32), axis=1))
        return loss, {"contrastive_accuracy": losses.accuracy(labels, logits)}, z_a

    def pretext_loss(self, views, training=False):
        loss, metrics, _ = self.step_forward(views, training)
        return loss, metrics

    def after_update(self, views, z_a, updated):
        # The batch's first-view projections (all replicas) replace the oldest support-set entries,
        # after the loss has read the old ones (on every batch, as MoCo's keys).
        self.queue.enqueue(z_a)
