"""DIM, Deep InfoMax: Learning deep representations by mutual information estimation and
maximization (Hjelm, Fedorov, Lavoie-Marchildon, Grewal, Bachman, Trischler, Bengio, ICLR 2019).

The encoder gives a local feature map M (an intermediate stage of the backbone, `local_layer`)
and a global vector Y (its pooled output). A discriminator scores (local, global) pairs in the
paper's "encode-and-dot-product" form: a 1x1-conv net embeds every location of M, an MLP embeds
Y, and the score is their dot product. Pairs from the same image are positives; Y paired with
the local features of every other image of the GLOBAL batch (gathered across replicas) are
negatives. The MI estimator is selectable (`zoo.losses.MI_ESTIMATORS`): "jsd" (Jensen-Shannon),
"dv" (Donsker-Varadhan) or "infonce" (the paper's best for downstream accuracy).

Modes: "local" is DIM(L), the objective averaged over every location of M (the paper's best);
"global" is DIM(G), Y against a summary of the whole map (1x1 conv, flatten, MLP: the encoder's
global features against a local summary of the same image, as the paper's global discriminator
sees Y and the whole of M); "both" is alpha * DIM(G) + beta * DIM(L). The paper's third term,
prior matching on Y (gamma, an adversarial penalty), is omitted: the paper reports it as a
minor effect on classification, and it needs a second, adversarial optimiser.

Choice of local map: what makes DIM(L) work is that each location sees a PART of the image, so
that Y must summarise what all the parts have in common. The paper's CIFAR encoder takes its 8 x 8
local map after two 4x4 stride-2 convolutions (receptive field 10 px). In the zoo's CIFAR ResNet,
stage1's receptive field is 11 px (32 x 32 map), stage2's 25 px, stage3's 53 px (the whole
image). The default is therefore `local_layer: stage1` average-pooled by `local_pool: 4` to 8 x 8
(receptive field 14 px). Measured (runs/dim_set-stage3, 12 epochs): with stage3 locations that
see the whole image, the InfoNCE loss fell to 0.02 (every location identifies its image) and the
pooled features ended below the untrained encoder (kNN 29.70, linear 30.08 val vs 31-32 / 34-35).
The backbone's stages after the local layer learn through Y in every mode.

Heads (`zoo.heads.embedding_head`, functional models; batch norm synchronised with `sync_bn`):
DIM's MI1x1ConvNet form, a nonlinear branch (Dense/1x1 conv -> BN -> ReLU -> Dense) plus a
linear shortcut, then layer norm. Scores (`zoo.losses.global_local_scores`) are dot products
divided by sqrt(embedding_dim) (as AMDIM's code does): with layer-normed embeddings the raw
product grows with the dimension; optionally soft-clipped (`score_clip`, AMDIM's tanh clip),
useful for the unbounded DV estimator.
"""
import dataclasses

import keras
import tensorflow as tf
from keras import layers

from zoo import augment, losses, patches
from zoo.heads import embedding_head, map_shapes, stage_maps
from zoo.methods.base import MethodConfig, SSLMethod
from zoo.registry import register_method

MODES = ("local", "global", "both")


@dataclasses.dataclass
class DIMConfig(MethodConfig):
    local_layer: str = "stage1"     # the local map M: "stage1".."stage4" (see the module docstring)
    local_pool: int = 4             # average-pool M by this factor (1: off); stage1 32 x 32 -> 8 x 8
    mode: str = "local"             # "local" DIM(L), "global" DIM(G), "both" (alpha * G + beta * L)
    alpha: float = 0.5              # weight of DIM(G) in mode "both" (mode "global": 1)
    beta: float = 1.0               # weight of DIM(L) in mode "both" (mode "local": 1)
    estimator: str = "infonce"      # "jsd", "dv" or "infonce"
    embedding_dim: int = 256        # the discriminator's dot-product space (the paper: 2048)
    summary_channels: int = 32      # DIM(G): 1x1 conv channels of M before flattening
    score_clip: float | None = None  # tanh clip of the scores (None: off)
    crop_padding: int | None = None  # CIFAR-style random crop (reflect-pad, crop back); None: size // 8; 0: off
    flip: bool = True


def summary_head(map_shape, channels, embedding_dim, sync_bn=False, name="summary"):
    """DIM(G)'s view of the whole local map: 1x1 conv -> BN -> ReLU -> flatten -> embedding MLP."""
    inputs = keras.Input(tuple(map_shape))
    x = layers.Dense(channels, use_bias=False, name=f"{name}_reduce")(inputs)
    x = layers.ReLU()(layers.BatchNormalization(momentum=0.9, epsilon=1e-5, synchronized=sync_bn,
                                                name=f"{name}_reduce_bn")(x))
    x = layers.Flatten()(x)
    x = embedding_head((x.shape[-1],), embedding_dim, sync_bn=sync_bn, name=f"{name}_mlp")(x)
    return keras.Model(inputs, x, name=name)


@register_method("dim")
class DIM(SSLMethod):
    Config = DIMConfig

    @property
    def metric_names(self):
        mode = self.config.mode
        local = ("local_mi",) if mode in ("local", "both") else ()
        return local + (("global_mi",) if mode in ("global", "both") else ())

    def build_heads(self):
        c = self.config
        if c.mode not in MODES:
            raise ValueError(f"dim: mode={c.mode!r}; choose one of {MODES}.")
        if c.estimator not in losses.MI_ESTIMATORS:
            raise ValueError(f"dim: estimator={c.estimator!r}; choose one of {sorted(losses.MI_ESTIMATORS)}.")
        self.stage_maps = stage_maps(self.encoder, [c.local_layer])
        map_shape = map_shapes(self.stage_maps, c.image_size)[0]
        if c.local_pool < 1 or map_shape[0] % c.local_pool or map_shape[1] % c.local_pool:
            raise ValueError(f"dim: local_pool={c.local_pool} must be >= 1 and divide the {c.local_layer} map "
                             f"({map_shape[0]} x {map_shape[1]} at image_size {c.image_size}).")
        map_shape = (map_shape[0] // c.local_pool, map_shape[1] // c.local_pool, map_shape[2])
        e = c.embedding_dim
        if c.mode in ("local", "both"):
            self.local_head = embedding_head((None, None, map_shape[-1]), e, sync_bn=c.sync_bn, name="local_head")
            self.global_head = embedding_head((self.feature_dim,), e, sync_bn=c.sync_bn, name="global_head")
        if c.mode in ("global", "both"):
            self.summary_head = summary_head(map_shape, c.summary_channels, e, sync_bn=c.sync_bn, name="summary_head")
            self.global_head_g = embedding_head((self.feature_dim,), e, sync_bn=c.sync_bn, name="global_head_g")

    def make_views(self, images, labels, seed):
        """{"images": [B, S, S, 3] in [0, 1]}: random crop (reflect padding) and flip."""
        c = self.config
        x = patches.resize_to(augment.to_float(images), c.image_size)
        return {"images": augment.crop_and_flip(x, seed, c.crop_padding, c.flip)}

    def local_and_global(self, images, training=False):
        """(the local map M [B, h, w, C], average-pooled by local_pool; the global vector Y [B, D])."""
        local_map, pooled = self.stage_maps(images, training=training)
        if self.config.local_pool > 1:
            local_map = tf.nn.avg_pool2d(local_map, self.config.local_pool, self.config.local_pool, "VALID")
        return local_map, pooled

    def pretext_loss(self, views, training=False):
        c = self.config
        local_map, pooled = self.local_and_global(views["images"], training=training)
        loss, metrics = 0.0, {}
        weights = {"local": (0.0, 1.0), "global": (1.0, 0.0), "both": (c.alpha, c.beta)}[c.mode]
        if c.mode in ("local", "both"):
            # DIM(L): each image's global vector against every location of every image's map.
            g = self.global_head(pooled, training=training)
            local = losses.flatten_locations(self.local_head(local_map, training=training))
            scores, positive, _ = losses.global_local_scores(g, local, clip=c.score_clip)
            loss += weights[1] * losses.mi_loss(scores, positive, c.estimator)
            metrics["local_mi"] = losses.MI_ESTIMATORS[c.estimator](scores, positive)
        if c.mode in ("global", "both"):
            # DIM(G): each image's global vector against every image's summary of its whole map.
            g = self.global_head_g(pooled, training=training)
            summary = self.summary_head(local_map, training=training)[:, None]
            scores, positive, _ = losses.global_local_scores(g, summary, clip=c.score_clip)
            loss += weights[0] * losses.mi_loss(scores, positive, c.estimator)
            metrics["global_mi"] = losses.MI_ESTIMATORS[c.estimator](scores, positive)
        return loss, metrics
