"""PIRL: Self-Supervised Learning of Pretext-Invariant Representations (Misra & van der Maaten,
CVPR 2020), with the jigsaw transformation.

Two views of every image I: the image view v_I (an augmented crop) and the jigsaw view v_J
(9 tiles of another crop, each through the same encoder `self.encoder`, in a random order).
- f(v_I) = linear projection of the encoder's features to 128-d (the paper's f head);
- g(v_J): every tile's features -> a shared linear projection to 128-d, the 9 projections
  concatenated in the (shuffled) input order -> linear to 128-d (the paper's g head; the
  first author's VISSL config: Linear(2048, 128) per patch, concat 1152 -> Linear(1152, 128));
  `tile_dim: 0` concatenates the raw tile features instead.
Both are L2-normalised. A memory bank (zoo.memory_bank.MemoryBank) holds m_I, a moving average
of f(v_I) per training image (momentum 0.5). The loss, with lambda = 0.5 and t = 0.07:
    L = lambda * L(m_I, g(v_J)) + (1 - lambda) * L(m_I, f(v_I)),
    L(m_I, v) = -log exp(m_I.v / t) / (exp(m_I.v / t) + sum_{I' in D_N} exp(m_I'.v / t)),
the negatives D_N drawn from the bank: the whole bank (`num_negatives: 0`, exact and cheap for
a CIFAR-sized bank) or `num_negatives` entries drawn uniformly per image (the paper: 32000 for
ImageNet), computed as in NPID (`zoo.losses.pirl_loss` on `zoo.losses.npid_logits`, which masks
a drawn entry that is the image's own). The loss reads the bank as it was before the step;
after the optimizer step the batch's rows move towards f(v_I): m_I <- normalize(0.5 m_I + 0.5
f(v_I)) (the `after_update` hook follows npid.py: one `memory_bank.update` call outside the tape).

Softmax (InfoNCE) instead of the paper's NCE: the paper writes L_NCE with a binary classifier
h(m, v) = exp(s/t) / (exp(s/t) + |D_N| / N) per pair and a sum of log(1 - h) over negatives,
which needs the noise distribution's normalisation (a constant Z estimated from the data, as
in NPID). The softmax over the positive and the same negatives needs no such constant, has the
same minimiser structure (positive pair up, negative pairs down), is what NPID's and MoCo's
implementations here use, and is one of the two losses of the authors' own VISSL
implementation (`nce_loss_with_memory`, loss_type "cross_entropy").

Views (the VISSL config of the first author, scaled): the image view is a random resized crop
(scale 0.08-1) of `image_size` px; the jigsaw view a random resized crop (scale 0.6-1) of
`cut_size` px (default image_size; 255 px for 224 px images in the paper), cut into a 3x3 grid
with a random `tile_fraction` = 64/85 tile in every cell (zoo.patches.cut_tiles), the tiles in
a uniformly random order (zoo.patches.random_permutations / shuffle_tiles; PIRL learns
invariance to the permutation, so any permutation will do). Image and every tile
independently: colour jitter (0.4, 0.4, 0.4, hue 0.2), greyscale p=0.2, horizontal flip.
(VISSL's "random photometric" PIL operations are not reproduced.) Views stay in [0, 1]. A
32 px image gives 8 px tiles.

Example ids: `uses_example_ids = True` (the pipeline passes each image's index as `labels`
and the trainer fills `num_examples` = bank rows), as in NPID.
"""
import dataclasses

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from zoo import augment, losses, patches
from zoo.heads import encode_stack, linear_head
from zoo.memory_bank import MemoryBank, bank_rows
from zoo.methods.base import MethodConfig, SSLMethod
from zoo.registry import register_method

NUM_TILES = 9


@dataclasses.dataclass
class PIRLConfig(MethodConfig):
    num_examples: int = 0              # training-set size = bank rows; filled in by the trainer
    embedding_dim: int = 128
    tile_dim: int = 128                # per-tile projection before the concatenation (0: raw features)
    temperature: float = 0.07
    loss_weight: float = 0.5           # lambda: weight of the jigsaw term L(m_I, g(v_J))
    bank_momentum: float = 0.5
    num_negatives: int = 0             # 0: the whole bank; K > 0: K random entries per image + the positive
    crop_scale: tuple = (0.08, 1.0)    # image view
    tile_crop_scale: tuple = (0.6, 1.0)  # the crop the tiles are cut from
    cut_size: int | None = None        # px of that crop (None: image_size)
    tile_fraction: float = 64 / 85     # tile side / grid cell side (64 px tiles in 85 px cells)
    jitter: float = 0.4                # brightness, contrast, saturation
    hue: float = 0.2
    grayscale_p: float = 0.2
    bank_seed: int = 0


def jigsaw_head(feature_dim, tile_dim, output_dim, num_tiles=NUM_TILES, name="jigsaw_head"):
    """g: [B, 9, D] tile features -> (shared Dense to tile_dim per tile) -> concat -> Dense output_dim."""
    inputs = keras.Input((num_tiles, feature_dim))
    x = inputs
    width = feature_dim
    if tile_dim:
        x = layers.Dense(tile_dim, name=f"{name}_tile")(x)
        width = tile_dim
    x = layers.Reshape((num_tiles * width,), name=f"{name}_concat")(x)
    return keras.Model(inputs, layers.Dense(output_dim, name=f"{name}_out")(x), name=name)


@register_method("pirl")
class PIRL(SSLMethod):
    Config = PIRLConfig
    metric_names = ("jigsaw_accuracy", "image_accuracy")
    uses_example_ids = True

    @property
    def bank_size(self):
        return bank_rows(self.config.num_examples)  # one row per training image, as NPID's bank

    def build_heads(self):
        c = self.config
        if not 0.0 <= c.loss_weight <= 1.0:
            raise ValueError(f"pirl: loss_weight (lambda) {c.loss_weight} must be in [0, 1].")
        self.cut_size = c.cut_size or c.image_size
        self.geometry = patches.grid_geometry(self.cut_size, 1.0, c.tile_fraction)
        if self.geometry.tile > c.image_size:
            raise ValueError(f"pirl: {self.geometry.tile} px tiles exceed image_size {c.image_size}.")
        self.image_head = linear_head(self.feature_dim, c.embedding_dim, name="image_head")
        self.jigsaw_head = jigsaw_head(self.feature_dim, c.tile_dim, c.embedding_dim)
        self.memory_bank = MemoryBank(self.bank_size, c.embedding_dim, momentum=c.bank_momentum,
                                      seed=c.bank_seed, name="pirl_memory_bank")

    # --- views ----------------------------------------------------------------------------
    def _photometric(self, x, seed):
        """Colour jitter, greyscale and flip of every image of x [N, h, w, 3] independently."""
        c = self.config
        s_jit, s_gray, s_flip = augment.split_seed(seed, 3)
        x = augment.color_jitter(x, s_jit, c.jitter, c.jitter, c.jitter, c.hue)
        x = patches.random_grayscale(x, s_gray, c.grayscale_p)
        return augment.random_flip(x, s_flip)

    def make_views(self, images, labels, seed):
        """{"image": [B, s, s, 3], "tiles": [B, 9, t, t, 3] in shuffled order, "permutation":
        [B, 9] (input position i holds cell permutation[i]), "ids": [B]} (+ "negatives" [B, K])."""
        c = self.config
        s_img, s_img_ph, s_cut, s_grid, s_tile_ph, s_perm, s_neg = augment.split_seed(seed, 7)
        x = augment.to_float(images)
        b = tf.shape(x)[0]
        image = self._photometric(augment.random_resized_crop(x, c.image_size, s_img, scale=tuple(c.crop_scale)),
                                  s_img_ph)
        crop = augment.random_resized_crop(x, self.cut_size, s_cut, scale=tuple(c.tile_crop_scale))
        tiles = patches.cut_tiles(crop, self.geometry, s_grid)  # [B, 9, t, t, 3], cell order
        t = self.geometry.tile
        tiles = tf.reshape(self._photometric(tf.reshape(tiles, [-1, t, t, 3]), s_tile_ph), [-1, NUM_TILES, t, t, 3])
        perms = patches.random_permutations(b, s_perm, NUM_TILES)
        views = {"image": image, "tiles": patches.shuffle_tiles(tiles, perms), "permutation": perms,
                 "ids": tf.cast(labels, tf.int32)}
        if c.num_negatives > 0:
            views["negatives"] = self.memory_bank.sample_ids(b, c.num_negatives, s_neg)
        return views

    # --- forward --------------------------------------------------------------------------
    def embed_image(self, images, training=False):
        """f(v_I): L2-normalised [B, D]."""
        return tf.math.l2_normalize(tf.cast(self.image_head(self.encoder(images, training=training),
                                                            training=training), tf.float32), axis=1)

    def embed_tiles(self, tiles, training=False):
        """g(v_J): L2-normalised [B, D] of the 9 tiles [B, 9, t, t, 3] (one encoder call)."""
        features = encode_stack(self.encoder, tiles, training)
        return tf.math.l2_normalize(tf.cast(self.jigsaw_head(features, training=training), tf.float32), axis=1)

    def step_forward(self, views, training=False):
        c = self.config
        f = self.embed_image(views["image"], training=training)
        g = self.embed_tiles(views["tiles"], training=training)
        ids = self.memory_bank.wrap_ids(views["ids"])
        loss, logits_j, logits_i, labels = losses.pirl_loss(g, f, ids, self.memory_bank.read(), c.temperature,
                                                            c.loss_weight, views.get("negatives"))
        metrics = {"jigsaw_accuracy": losses.accuracy(labels, logits_j),
                   "image_accuracy": losses.accuracy(labels, logits_i)}
        return loss, metrics, f

    def pretext_loss(self, views, training=False):
        loss, metrics, _ = self.step_forward(views, training)
        return loss, metrics

    def after_update(self, views, f, updated):
        self.memory_bank.update(views["ids"], f)  # after the loss read the old bank

    def view_panels(self, views, index):
        """The image view, the tiles as the network sees them (input order) and put back in
        their cells."""
        image = np.clip(np.asarray(views["image"][index], np.float32), 0.0, 1.0)
        tiles = [np.clip(t, 0.0, 1.0) for t in np.asarray(views["tiles"][index], np.float32)]
        perm = np.asarray(views["permutation"][index])
        size = tiles[0].shape[0]
        shuffled = patches.assemble_grid(tiles, [divmod(i, 3) for i in range(NUM_TILES)], size)
        placed = patches.assemble_grid(tiles, [divmod(int(cell), 3) for cell in perm], size)
        ident = int(np.asarray(views["ids"][index]))
        return [(f"image id={ident}", image), ("tiles (input order)", shuffled), ("tiles in place", placed)]
