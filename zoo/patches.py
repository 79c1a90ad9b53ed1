"""Patch geometry shared by the patch-based pretext tasks (relative patch location, jigsaw,
PIRL's jigsaw branch, CPC's patch grid, counting's image pairs).

Everything that runs per batch is a pure, static-shape tf op seeded statelessly (the same seed
gives the same patches), so it runs in the tf.data pipeline and traces under jit_compile:

- `pair_geometry` / `sample_pair_corners`: a 3x3 grid of patches with gaps between them and a
  random jitter of every patch (Doersch, Gupta, Efros 2015); the centre patch and one of its 8
  neighbours, labelled by the neighbour's position (`NEIGHBOURS`);
- `grid_geometry` / `sample_grid_corners` / `cut_tiles`: a random crop cut into 3x3 cells with a
  random smaller tile inside every cell (Noroozi & Favaro 2016); `shuffle_tiles`,
  `random_permutations`, `replace_from_partner` (Jigsaw++), `standardize_tiles`;
- `pair_partner`: the other image of each (i, i XOR 1) pair of a batch (Jigsaw++, counting);
- `patch_grid_geometry` / `cut_patch_grid`: a regular grid of overlapping patches (CPC);
- `extract_patches`: integer boxes -> pixels, by gathers (exact; no resampling);
  `cut_patches` optionally resamples every patch from a random sub-box of its box
  (`sample_sub_boxes`, `resample_boxes`), which hides where JPEG's 8x8 block edges fall;
- `drop_channels`, `project_green_magenta`, `random_grayscale`, `chromatic_defence`: the
  defences against chromatic aberration of both papers;
- `max_hamming_permutations`, `permutation_set` (cached on disk, zoo.cache), `hamming_stats`:
  the jigsaw permutation set, chosen greedily for maximal Hamming distance (Noroozi & Favaro,
  Algorithm 1).

Coordinates are integer (row, column) pixel positions of a box's top-left corner; boxes are
squares of a known side. Images are float [B, H, W, C]; patch stacks are [B, K, h, w, C].
"""
import dataclasses
import itertools
import math
import os
import warnings

import numpy as np
import tensorflow as tf

from zoo.augment import split_seed
from zoo.cache import cache_dir, write_atomically

# Neighbour positions of relative-patch labels 0..7, as (row, col) cells of the 3x3 grid:
# row-major order skipping the centre (1, 1).
NEIGHBOURS = ((0, 0), (0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1), (2, 2))
NEIGHBOUR_NAMES = ("top-left", "top", "top-right", "left", "right", "bottom-left", "bottom", "bottom-right")
CHROMATIC_MODES = ("drop", "gray", "none")

# Luma weights (ITU-R 601) as in zoo.augment; plain lists, no tensors at import.
_GRAY = [0.299, 0.587, 0.114]
# Doersch et al.'s "green-magenta" colour axis, unit length: projection removes it.
_GREEN_MAGENTA = [-1 / math.sqrt(6), 2 / math.sqrt(6), -1 / math.sqrt(6)]
_STD_FLOOR = 1e-3  # variance floor of per-tile standardisation (std >= ~0.03 of the [0, 1] range)


def pixels(fraction, size):
    """round(fraction * size), halves rounded up (not to even)."""
    return int(math.floor(fraction * size + 0.5))


# ---- relative patch location (Doersch et al. 2015) ----------------------------------------

@dataclasses.dataclass(frozen=True)
class PairGeometry:
    """A 3x3 grid of `patch` px squares, `gap` px apart, every patch moved by up to `jitter` px
    along each axis, inside an `image_size` px image. Adjacent patches are therefore at least
    `gap - 2 * jitter` px apart (`min_gap`), never overlapping."""
    image_size: int
    patch: int
    gap: int
    jitter: int

    @property
    def pitch(self):
        return self.patch + self.gap

    @property
    def extent(self):
        """Side of the un-jittered grid."""
        return 3 * self.patch + 2 * self.gap

    @property
    def min_gap(self):
        return self.gap - 2 * self.jitter

    @property
    def origin_range(self):
        """Inclusive range of the un-jittered grid's top-left coordinate."""
        return self.jitter, self.image_size - self.extent - self.jitter


def pair_geometry(image_size, patch_fraction, gap_fraction, jitter_fraction):
    """Pixel geometry from fractions of the image side; ValueError if it cannot work."""
    g = PairGeometry(image_size, pixels(patch_fraction, image_size), pixels(gap_fraction, image_size),
                     pixels(jitter_fraction, image_size))
    if g.patch < 1 or g.gap < 0 or g.jitter < 0:
        raise ValueError(f"relative patch: {g} needs a patch of at least 1 px and a non-negative gap and jitter.")
    if g.min_gap < 0:
        raise ValueError(f"relative patch: gap {g.gap} px < 2 x jitter {g.jitter} px, so patches could overlap; "
                         "raise gap_fraction or lower jitter_fraction.")
    if g.extent + 2 * g.jitter > image_size:
        raise ValueError(f"relative patch: 3 patches of {g.patch} px + 2 gaps of {g.gap} px + 2 x jitter {g.jitter} px "
                         f"= {g.extent + 2 * g.jitter} px do not fit in a {image_size} px image; lower the fractions.")
    return g


def sample_pair_corners(batch, geometry, seed):
    """Top-left corners [B, 2, 2] int32 of (centre, neighbour) patches and labels [B] int32.

    The grid is placed uniformly at random where its jittered patches stay inside the image;
    every patch is then moved independently by a uniform integer in [-jitter, jitter] per axis;
    the neighbour's label indexes `NEIGHBOURS`."""
    g = geometry
    s_origin, s_jitter, s_label = split_seed(seed, 3)
    lo, hi = g.origin_range
    origin = tf.random.stateless_uniform([batch, 1, 2], s_origin, lo, hi + 1, tf.int32)
    labels = tf.random.stateless_uniform([batch], s_label, 0, 8, tf.int32)
    cells = tf.gather(tf.constant(NEIGHBOURS, tf.int32), labels)  # [B, 2] (row, col)
    cells = tf.stack([tf.ones_like(cells), cells], axis=1)  # centre (1, 1) first
    jitter = tf.random.stateless_uniform([batch, 2, 2], s_jitter, -g.jitter, g.jitter + 1, tf.int32)
    return origin + g.pitch * cells + jitter, labels


# ---- jigsaw (Noroozi & Favaro 2016) --------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class GridGeometry:
    """A random `3 * cell` px square crop of an `image_size` px image, cut into 3x3 cells of
    `cell` px, with a `tile` px tile at a random place inside every cell (gaps of 0 to
    2 * (cell - tile) px between neighbouring tiles)."""
    image_size: int
    cell: int
    tile: int

    @property
    def crop(self):
        return 3 * self.cell


def grid_geometry(image_size, crop_fraction, tile_fraction):
    """crop = round(crop_fraction * image_size), cell = crop // 3, tile = round(tile_fraction * cell)."""
    cell = pixels(crop_fraction, image_size) // 3
    g = GridGeometry(image_size, cell, min(pixels(tile_fraction, cell), cell))
    if g.tile < 1 or g.crop > image_size:
        raise ValueError(f"jigsaw: crop_fraction {crop_fraction} and tile_fraction {tile_fraction} of a "
                         f"{image_size} px image give {g}; need 1 <= tile <= cell and 3 * cell <= image_size.")
    return g


def sample_grid_corners(batch, geometry, seed):
    """Top-left corners [B, 9, 2] int32 of the tiles of cells 0..8 (row-major)."""
    g = geometry
    s_crop, s_tile = split_seed(seed, 2)
    origin = tf.random.stateless_uniform([batch, 1, 2], s_crop, 0, g.image_size - g.crop + 1, tf.int32)
    cells = tf.constant([[r * g.cell, c * g.cell] for r in range(3) for c in range(3)], tf.int32)
    offset = tf.random.stateless_uniform([batch, 9, 2], s_tile, 0, g.cell - g.tile + 1, tf.int32)
    return origin + cells[None] + offset


def cut_tiles(images, geometry, seed, min_scale=1.0):
    """The 9 tiles [B, 9, tile, tile, C] of images [B, S, S, C], in cell order (row-major);
    min_scale < 1 resamples every tile from a random sub-box of its box (`cut_patches`)."""
    s_corners, s_resample = split_seed(seed, 2) if min_scale < 1 else (seed, None)
    corners = sample_grid_corners(tf.shape(images)[0], geometry, s_corners)
    return cut_patches(images, corners, geometry.tile, min_scale, s_resample)


def random_permutations(batch, seed, n=9):
    """[batch, n] int32: an independent uniformly random permutation of range(n) per row (for
    methods that shuffle tiles freely rather than from a fixed set, e.g. PIRL)."""
    return tf.argsort(tf.random.stateless_uniform([batch, n], seed), axis=1)


def shuffle_tiles(tiles, perms):
    """Puzzle input from tiles in cell order: out[:, i] = tiles[:, perms[:, i]], i.e. the i-th
    tile the network sees is cell perms[i]. tiles [B, 9, ...], perms [B, 9] int."""
    return tf.gather(tiles, tf.cast(perms, tf.int32), axis=1, batch_dims=1)


def pair_partner(batch):
    """Index of every example's partner image: i XOR 1 (so pairs never straddle an even-sized
    per-replica shard); in an odd batch the last image pairs with the one before it (a batch of
    one with itself). Jigsaw++'s tile donors and counting's contrast images."""
    i = tf.range(batch)
    partner = tf.bitwise.bitwise_xor(i, 1)
    return tf.where(partner < batch, partner, tf.maximum(i - 1, 0))


def replace_from_partner(tiles, k, seed):
    """Jigsaw++: replace k random cells of every image's tiles [B, 9, ...] (cell order) with the
    same cells of its partner image i XOR 1 (its original tiles). Returns (tiles, replaced
    [B, 9] bool)."""
    if k <= 0:
        return tiles, tf.zeros(tf.shape(tiles)[:2], tf.bool)
    n = tiles.shape[1]
    batch = tf.shape(tiles)[0]
    order = random_permutations(batch, seed, n)
    replaced = tf.reduce_any(tf.one_hot(order[:, :k], n, on_value=True, off_value=False, dtype=tf.bool), axis=1)
    partner = tf.gather(tiles, pair_partner(batch))
    mask = tf.reshape(replaced, tf.concat([tf.shape(replaced), tf.ones([tiles.shape.rank - 2], tf.int32)], 0))
    return tf.where(mask, partner, tiles), replaced


def standardize_tiles(tiles):
    """Zero mean, unit standard deviation per tile and channel (over the tile's pixels), with the
    variance floored so a flat tile maps to zeros instead of amplified noise."""
    mean, var = tf.nn.moments(tiles, axes=[-3, -2], keepdims=True)
    return (tiles - mean) * tf.math.rsqrt(var + _STD_FLOOR)


# ---- contrastive predictive coding (van den Oord et al. 2018) --------------------------------

@dataclasses.dataclass(frozen=True)
class PatchGridGeometry:
    """A `grid` x `grid` grid of `patch` px squares every `stride` px (overlapping when stride <
    patch), centred in an `image_size` px image: CPC's patch grid. (Jigsaw's grid, 3x3 cells with
    a random tile in each, is `GridGeometry`.)"""
    image_size: int
    patch: int
    stride: int

    @property
    def grid(self):
        return (self.image_size - self.patch) // self.stride + 1

    @property
    def span(self):
        return (self.grid - 1) * self.stride + self.patch

    @property
    def offset(self):
        return (self.image_size - self.span) // 2


def patch_grid_geometry(image_size, patch_fraction, stride_fraction):
    """patch = round(patch_fraction * image_size), stride = round(stride_fraction * image_size);
    ValueError unless the grid has at least 2 x 2 patches."""
    g = PatchGridGeometry(image_size, pixels(patch_fraction, image_size), pixels(stride_fraction, image_size))
    if g.patch < 1 or g.stride < 1 or g.patch > image_size or g.grid < 2:
        raise ValueError(f"cpc: patch_fraction {patch_fraction} and stride_fraction {stride_fraction} of a "
                         f"{image_size} px image give {g} ({g.grid if g.stride else 0} patches per row); "
                         "need 1 <= stride, patch <= image_size and a grid of at least 2 x 2.")
    return g


def cut_patch_grid(images, geometry):
    """images [B, S, S, C] -> [B, G*G, p, p, C], patch r*G + c is rows r*stride.., cols c*stride..
    (after the grid's centring offset), exactly the pixels (no resampling)."""
    g = geometry
    x = images[:, g.offset:g.offset + g.span, g.offset:g.offset + g.span]
    grid = tf.image.extract_patches(x, [1, g.patch, g.patch, 1], [1, g.stride, g.stride, 1], [1, 1, 1, 1], "VALID")
    return tf.reshape(grid, [-1, g.grid * g.grid, g.patch, g.patch, images.shape[-1]])


# ---- pixels ---------------------------------------------------------------------------------

def extract_patches(images, corners, size):
    """images [B, H, W, C], corners [B, K, 2] int (row, col) -> [B, K, size, size, C], exactly the
    pixels images[b, y:y + size, x:x + size] (two gathers; corners must keep boxes inside)."""
    corners = tf.cast(corners, tf.int32)
    r = tf.range(size, dtype=tf.int32)
    rows = corners[..., 0:1] + r  # [B, K, size]
    cols = corners[..., 1:2] + r
    strips = tf.gather(images, rows, axis=1, batch_dims=1)  # [B, K, size, W, C]
    return tf.gather(strips, cols, axis=3, batch_dims=2)  # [B, K, size, size, C]


def sample_sub_boxes(corners, size, min_scale, seed):
    """Float boxes [B, K, 4] (y1, x1, y2, x2), in the coordinates of pixel centres, of a random
    square inside every `size` px box at corners [B, K, 2]: its span is (size - 1) * s with
    s ~ U(min_scale, 1) per box, placed uniformly where it stays between the box's first and
    last pixel centres. Boxes never leave their integer boxes, so the patch geometry (gaps,
    no overlap, inside the image) still holds."""
    s_scale, s_place = split_seed(seed, 2)
    shape = tf.shape(corners)[:2]
    span = (size - 1) * tf.random.stateless_uniform(shape, s_scale, min_scale, 1.0)  # [B, K]
    place = tf.random.stateless_uniform(tf.concat([shape, [2]], 0), s_place)  # [B, K, 2]
    start = tf.cast(corners, tf.float32) + ((size - 1) - span)[..., None] * place
    return tf.concat([start, start + span[..., None]], axis=-1)


def resample_boxes(images, boxes, size):
    """images [B, H, W, C], boxes [B, K, 4] from `sample_sub_boxes` -> [B, K, size, size, C]:
    bilinear samples on a size x size grid whose first and last rows/columns lie on the box's
    edges (tf.image.crop_and_resize, with the boxes normalised by H - 1 and W - 1)."""
    batch, k, channels = tf.shape(boxes)[0], boxes.shape[1], images.shape[-1]
    h = tf.cast(tf.shape(images)[1] - 1, tf.float32)
    w = tf.cast(tf.shape(images)[2] - 1, tf.float32)
    flat = tf.reshape(boxes / tf.stack([h, w, h, w]), [-1, 4])
    out = tf.image.crop_and_resize(images, flat, tf.repeat(tf.range(batch), k), [size, size])
    return tf.reshape(out, [batch, k, size, size, channels])


def check_min_scale(min_scale, name="min_scale"):
    """ValueError naming `name` unless 0 < min_scale <= 1 (the sub-box scale of `cut_patches`)."""
    if not 0 < min_scale <= 1:
        raise ValueError(f"{name}={min_scale}: the sub-box scale must be in (0, 1] (1 = exact pixels).")


def cut_patches(images, corners, size, min_scale=1.0, seed=None):
    """The `size` px patches [B, K, size, size, C] at corners [B, K, 2]: exactly their pixels
    when min_scale is 1, otherwise each resampled from a random sub-box of scale
    U(min_scale, 1) (`sample_sub_boxes`). Resampling moves the edges of the 8x8 JPEG blocks
    by a random sub-pixel amount per patch and changes their spacing to 8 / s px, so the
    network cannot read a patch's position from where the block edges fall in it."""
    check_min_scale(min_scale)
    if min_scale == 1:
        return extract_patches(images, corners, size)
    return resample_boxes(images, sample_sub_boxes(corners, size, min_scale, seed), size)


def resize_to(images, size):
    """float [B, H, W, C] -> [B, size, size, C] (bilinear), unchanged when already that size."""
    if images.shape[1] == size and images.shape[2] == size:
        return images
    return tf.image.resize(images, [size, size])


def _per_patch_shape(x):
    return tf.shape(x)[:-3]


def _expand_to_pixels(v):
    return v[..., None, None, None]


def drop_channels(x, seed, noise=0.01):
    """Colour dropping (Doersch et al. 2015): for every patch [..., h, w, 3], keep one random
    channel and replace the other two by Gaussian noise with the kept channel's mean and
    `noise` times its standard deviation (the paper: ~1/100), clipped to [0, 1]."""
    s_keep, s_noise = split_seed(seed, 2)
    keep = tf.random.stateless_uniform(_per_patch_shape(x), s_keep, 0, 3, tf.int32)
    keep_mask = tf.one_hot(keep, 3, on_value=True, off_value=False, dtype=tf.bool)[..., None, None, :]
    kept = tf.reduce_sum(tf.where(keep_mask, x, tf.zeros_like(x)), axis=-1, keepdims=True)
    mean, var = tf.nn.moments(kept, axes=[-3, -2, -1], keepdims=True)
    fill = mean + noise * tf.sqrt(var) * tf.random.stateless_normal(tf.shape(x), s_noise)
    return tf.where(keep_mask, x, tf.clip_by_value(fill, 0.0, 1.0))


def project_green_magenta(x):
    """Colour projection (Doersch et al. 2015): x (I - a a^T) for the unit green-magenta axis
    a ~ [-1, 2, -1], which shifts green and magenta towards grey (greys are unchanged);
    clipped to [0, 1]."""
    a = tf.constant(_GREEN_MAGENTA, x.dtype)
    return tf.clip_by_value(x - tf.tensordot(x, a, axes=1)[..., None] * a, 0.0, 1.0)


def to_gray(x):
    """Luma replicated to 3 channels, for any leading shape [..., 3]."""
    return tf.repeat(tf.tensordot(x, tf.constant(_GRAY, x.dtype), axes=1)[..., None], 3, axis=-1)


def random_grayscale(x, seed, p):
    """Every patch of x [..., h, w, 3] turned grey with probability p."""
    if p <= 0:
        return x
    gray = tf.random.stateless_uniform(_per_patch_shape(x), seed) < p
    return tf.where(_expand_to_pixels(gray), to_gray(x), x)


def chromatic_defence(x, mode, seed, noise=0.01):
    """mode "drop" (drop_channels), "gray" (project_green_magenta) or "none", per patch."""
    if mode == "drop":
        return drop_channels(x, seed, noise)
    if mode == "gray":
        return project_green_magenta(x)
    if mode == "none":
        return x
    raise ValueError(f"Unknown chromatic defence {mode!r}; choose one of {CHROMATIC_MODES}.")


# ---- permutation sets ------------------------------------------------------------------------

def all_permutations(n=9):
    """All n! permutations of range(n) in lexicographic order, uint8 [n!, n]."""
    return np.array(list(itertools.permutations(range(n))), dtype=np.uint8)


def max_hamming_permutations(num, seed=0, n=9):
    """Noroozi & Favaro's Algorithm 1: start from a permutation drawn with `seed`, then greedily
    add the permutation whose SUM of Hamming distances to those already chosen is largest
    (ties: the lexicographically first). Returns int32 [num, n].

    The Hamming distance to p is n minus the number of positions where they agree, so the sum
    is maximal where the running count of agreements is minimal; agreements with p are the sum
    of n rows of a one-hot (position, value) table, which keeps every step O(n * n!)."""
    perms = all_permutations(n)
    total = len(perms)
    if not 1 <= num <= total:
        raise ValueError(f"num_permutations must be between 1 and {total}, got {num}.")
    onehot = np.zeros((n * n, total), np.uint8)  # row k*n + v: does position k hold value v?
    for k in range(n):
        onehot[k * n + perms[:, k], np.arange(total)] = 1
    rows = np.arange(n) * n
    agreements = np.zeros(total, np.int64)
    chosen = [int(np.random.default_rng(seed).integers(total))]
    taken = np.iinfo(np.int64).max // 2
    for _ in range(num - 1):
        j = chosen[-1]
        agreements += onehot[rows + perms[j]].sum(axis=0, dtype=np.int64)
        agreements[j] = taken  # never chosen twice; adding at most n per step cannot overflow
        chosen.append(int(np.argmin(agreements)))
    return perms[chosen].astype(np.int32)


def hamming_matrix(perms):
    """Pairwise Hamming distances [N, N] of permutations [N, n]."""
    perms = np.asarray(perms)
    return (perms[:, None, :] != perms[None, :, :]).sum(-1)


def hamming_stats(perms):
    """(minimum, mean) Hamming distance over the distinct pairs of a permutation set."""
    d = hamming_matrix(perms)
    off = d[~np.eye(len(d), dtype=bool)]
    return int(off.min()), float(off.mean())


def _valid_set(perms, num, n):
    return (perms.shape == (num, n) and np.all(np.sort(perms, axis=1) == np.arange(n))
            and len(np.unique(perms, axis=0)) == num)


def permutation_path(num, seed=0, n=9):
    """The set's file in the `permutations` cache ($ZOO_CACHE_DIR/permutations, zoo.cache)."""
    return os.path.join(cache_dir("permutations"), f"maxhamming-n{n}-k{num}-seed{seed}.npy")


def permutation_set(num, seed=0, n=9):
    """`max_hamming_permutations(num, seed, n)`, read from the cache when it is there. The
    file is written atomically (zoo.cache.write_atomically); an unreadable or malformed file
    is regenerated; an unwritable cache directory only costs a warning."""
    path = permutation_path(num, seed, n)
    if os.path.exists(path):
        try:
            perms = np.load(path)
            if _valid_set(perms, num, n):
                return perms.astype(np.int32)
        except (OSError, ValueError):
            pass
    perms = max_hamming_permutations(num, seed, n)
    try:
        write_atomically(path, lambda f: np.save(f, perms), suffix=".npy.tmp")
    except OSError as e:
        warnings.warn(f"could not cache the jigsaw permutation set in {os.path.dirname(path)} ({e}); "
                      "set ZOO_CACHE_DIR to a writable folder")
    return perms


# ---- display ---------------------------------------------------------------------------------

def rescale_for_display(patch):
    """A patch of any range -> [0, 1] by its own min and max (a flat patch -> mid grey)."""
    patch = np.asarray(patch, np.float32)
    lo, hi = float(patch.min()), float(patch.max())
    if hi - lo < 1e-8:
        return np.full_like(patch, 0.5)
    return (patch - lo) / (hi - lo)


def assemble_grid(patches, positions, size, gap=1, background=0.5):
    """A 3x3 canvas of `size` px cells `gap` px apart with patches[i] ([h, w, 3] in [0, 1]) at
    cell positions[i] = (row, col), the rest `background`."""
    side = 3 * size + 2 * gap
    canvas = np.full((side, side, 3), background, np.float32)
    for patch, (r, c) in zip(patches, positions):
        h, w = patch.shape[:2]
        y, x = r * (size + gap), c * (size + gap)
        canvas[y:y + h, x:x + w] = patch
    return canvas
