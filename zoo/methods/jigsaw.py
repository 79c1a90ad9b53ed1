"""Jigsaw puzzles: Unsupervised Learning of Visual Representations by Solving Jigsaw Puzzles
(Noroozi & Favaro, ECCV 2016), with the Jigsaw++ variant (Noroozi, Vinjimoor, Favaro,
Pirsiavash, CVPR 2018) as `replace_tiles`.

A random crop is cut into 3x3 cells and a smaller tile is taken at a random place in every
cell (the gaps stop the network from matching edges). The tiles are shuffled by one
permutation of a fixed set chosen for maximal Hamming distance (`zoo.patches`), each tile goes
through the same encoder (9 shared towers: one `self.encoder` call on all tiles), the features
are concatenated in the shuffled order and an MLP classifies which permutation was used.

Shuffle convention (`zoo.patches.shuffle_tiles`): input position i holds the tile of cell
perm[i] (cells numbered row-major 0..8); the label is the permutation's index in the set.

With `resample_min_scale` < 1 every tile is resampled from a random sub-box of its box, so
that the JPEG block edges do not show where it was cut (design note 22).

Each tile is standardised on its own (mean 0, std 1 per channel) to remove low-level
statistics; the views then hold `z * std + mean` with the encoder's normalisation constants,
so that the encoder's built-in normalisation hands its first convolution exactly z, the scale
it sees on ordinary [0, 1] images after pre-training (values outside [0, 1]: unit_range_views
is False). Greyscale tiles (probability 0.3, as in the reference implementations) and the
chromatic-aberration defences of `zoo.patches` are options.

Jigsaw++: `replace_tiles: k` replaces k random cells by the same cells of image i XOR 1 of the
batch (pairs stay inside every even-sized per-replica shard, so the loss is the same on 1
device and on N replicas); the label stays the permutation index.
"""
import dataclasses

import numpy as np
import tensorflow as tf

from zoo import augment, losses, patches
from zoo.heads import encode_stack, siamese_classifier
from zoo.methods.base import MethodConfig, SSLMethod
from zoo.registry import register_method


@dataclasses.dataclass
class JigsawConfig(MethodConfig):
    num_permutations: int = 100      # classes; the paper compares 100 to 1000 (1000 for its best model)
    permutation_seed: int = 0        # seed of the greedy maximal-Hamming set (cached on disk)
    # The paper: a 225 px crop of a 256 px image -> 75 px cells -> 64 px tiles. At 32 px: 27 px
    # crop, 9 px cells, 8 px tiles (0 to 2 px between neighbouring tiles).
    crop_fraction: float = 225 / 256
    tile_fraction: float = 64 / 75
    cut_size: int | None = None      # px the image is resized to before cutting (None: image_size)
    normalize_tiles: bool = True     # per-tile mean/std standardisation (the paper)
    grayscale_p: float = 0.3         # per-tile greyscale probability (reference implementations)
    chromatic: str = "none"          # "drop", "gray" or "none": zoo.patches.chromatic_defence per tile
    drop_noise: float = 0.01
    replace_tiles: int = 0           # Jigsaw++: tiles taken from image i XOR 1 (0 = plain jigsaw)
    flip: bool = True                # random horizontal flip of the image before cutting
    # < 1: every tile resampled from a random sub-box of U(resample_min_scale, 1) of its box,
    # hiding the JPEG block edges' positions (see RelativePatchConfig, zoo.patches.cut_patches).
    resample_min_scale: float = 1.0
    # Head: a shared per-tile layer (the paper's fc6, 512 units) and a layer on the 9
    # concatenated tiles (fc7, 4096 in the paper; 1024 here for ResNet features); 0 removes one.
    branch_dim: int = 512
    hidden_dim: int = 1024


@register_method("jigsaw")
class Jigsaw(SSLMethod):
    Config = JigsawConfig
    metric_names = ("permutation_accuracy",)
    unit_range_views = False  # standardised tiles (see the module docstring)

    def build_heads(self):
        c = self.config
        if c.chromatic not in patches.CHROMATIC_MODES:
            raise ValueError(f"jigsaw: chromatic={c.chromatic!r}; choose one of {patches.CHROMATIC_MODES}.")
        if not 0 <= c.replace_tiles < 9:
            raise ValueError(f"jigsaw: replace_tiles={c.replace_tiles}; must be from 0 to 8.")
        patches.check_min_scale(c.resample_min_scale, "jigsaw: resample_min_scale")
        self.unit_range_views = not c.normalize_tiles
        self.cut_size = c.cut_size or c.image_size
        self.geometry = patches.grid_geometry(self.cut_size, c.crop_fraction, c.tile_fraction)
        if self.geometry.tile > c.image_size:
            raise ValueError(f"jigsaw: {self.geometry.tile} px tiles exceed image_size {c.image_size}.")
        self.permutation_array = patches.permutation_set(c.num_permutations, c.permutation_seed)
        self.permutations = tf.constant(self.permutation_array, tf.int32)  # [N, 9]
        self.classifier = siamese_classifier(self.feature_dim, 9, c.branch_dim, c.hidden_dim, c.num_permutations,
                                             sync_bn=c.sync_bn, name="permutation_head")

    def make_views(self, images, labels, seed):
        """{"tiles": [B, 9, t, t, 3] in shuffled order, "permutation": [B] int32 index into the
        set} and, with replace_tiles > 0, "replaced": [B, 9] bool (in shuffled order)."""
        c = self.config
        s_flip, s_grid, s_replace, s_gray, s_chroma, s_perm = augment.split_seed(seed, 6)
        x = patches.resize_to(augment.to_float(images), self.cut_size)
        if c.flip:
            x = augment.random_flip(x, s_flip)
        batch = tf.shape(x)[0]
        tiles = patches.cut_tiles(x, self.geometry, s_grid, c.resample_min_scale)
        tiles, replaced = patches.replace_from_partner(tiles, c.replace_tiles, s_replace)
        tiles = patches.random_grayscale(tiles, s_gray, c.grayscale_p)
        tiles = patches.chromatic_defence(tiles, c.chromatic, s_chroma, c.drop_noise)
        index = tf.random.stateless_uniform([batch], s_perm, 0, c.num_permutations, tf.int32)
        perms = tf.gather(self.permutations, index)
        tiles = patches.shuffle_tiles(tiles, perms)
        if c.normalize_tiles:
            tiles = patches.standardize_tiles(tiles) * tf.constant(c.std, tf.float32) + tf.constant(c.mean, tf.float32)
        views = {"tiles": tiles, "permutation": index}
        if c.replace_tiles:
            views["replaced"] = patches.shuffle_tiles(replaced, perms)
        return views

    def pretext_loss(self, views, training=False):
        logits = self.classifier(encode_stack(self.encoder, views["tiles"], training), training=training)
        labels = views["permutation"]
        return losses.cross_entropy(labels, logits), {"permutation_accuracy": losses.accuracy(labels, logits)}

    def view_panels(self, views, index):
        """The puzzle as the network sees it (tiles in input order, captioned with the permutation
        index) and solved (every tile put back in its cell); Jigsaw++ tiles from the partner image
        framed in red."""
        tiles = np.asarray(views["tiles"][index], np.float32)
        tiles = [patches.rescale_for_display(t) if self.config.normalize_tiles else np.clip(t, 0.0, 1.0)
                 for t in tiles]
        label = int(np.asarray(views["permutation"][index]))
        perm = self.permutation_array[label]
        if "replaced" in views:
            for i in np.flatnonzero(np.asarray(views["replaced"][index])):
                tiles[i] = tiles[i].copy()
                tiles[i][[0, -1], :] = tiles[i][:, [0, -1]] = (1.0, 0.0, 0.0)
        size = tiles[0].shape[0]
        shuffled = patches.assemble_grid(tiles, [divmod(i, 3) for i in range(9)], size)
        solved = patches.assemble_grid(tiles, [divmod(int(cell), 3) for cell in perm], size)
        solved_caption = "solved"
        if "replaced" in views:
            partner = int(patches.pair_partner(len(views["replaced"]))[index])
            solved_caption = f"solved, {int(np.sum(views['replaced'][index]))} from img {partner}"
        # Captions kept short: zoo-views (trainers/show_views.py) wraps them to the panel width.
        return [(f"permutation {label}", shuffled), (solved_caption, solved)]
