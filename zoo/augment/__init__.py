"""View makers: vectorised tf ops on whole batches, run inside the tf.data pipeline.

Every function takes float32 images in [0, 1] of shape [B, H, W, 3] and a stateless seed
(int32 [2]); the same seed gives the same views, so an interrupted run resumes on exactly the
data it would have seen. Batched ops (one crop_and_resize for the batch, colour jitter as
per-image scalars) are ~3x faster on CPU than Keras's per-image preprocessing layers.
"""
import math

import tensorflow as tf

# Luma weights (ITU-R 601). A plain list: a tensor made at import would initialise TensorFlow's
# devices before a program can configure them (e.g. zoo-train --cpu-devices).
_GRAY = [0.299, 0.587, 0.114]


def split_seed(seed, n):
    """n independent stateless seeds derived from one."""
    return tf.unstack(tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), n))


def to_float(images):
    """uint8 [0, 255] -> float32 [0, 1]."""
    return tf.cast(images, tf.float32) / 255.0


def _uniform(shape, seed, low, high):
    return tf.random.stateless_uniform(shape, seed, low, high)


def _bernoulli(batch, p, seed):
    return tf.random.stateless_uniform([batch], seed) < p


def _where(mask, a, b):
    return tf.where(mask[:, None, None, None], a, b)


def grayscale(images):
    return tf.tile(tf.tensordot(images, _GRAY, axes=1)[..., None], [1, 1, 1, 3])


def random_resized_crop(images, size, seed, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    """Inception-style crop: area fraction in `scale`, aspect ratio in `ratio` (log-uniform),
    resized to size x size. Boxes that would leave the image are clipped to it (torchvision
    instead retries 10 times; the clip changes the distribution only for extreme ratios)."""
    b = tf.shape(images)[0]
    boxes = random_crop_boxes(b, seed, scale, ratio)
    return tf.image.crop_and_resize(images, boxes, tf.range(b), [size, size])


def random_crop_boxes(batch, seed, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    """The boxes of `random_resized_crop`: [batch, 4] (y0, x0, y1, x1) as fractions of the
    image side, area fraction uniform in `scale`, aspect ratio w/h log-uniform in `ratio`,
    clipped to the image."""
    s_area, s_ratio, s_y, s_x = split_seed(seed, 4)
    area = _uniform([batch], s_area, scale[0], scale[1])
    log_r = _uniform([batch], s_ratio, math.log(ratio[0]), math.log(ratio[1]))
    r = tf.exp(log_r)
    h = tf.minimum(tf.sqrt(area / r), 1.0)
    w = tf.minimum(tf.sqrt(area * r), 1.0)
    y0 = _uniform([batch], s_y, 0.0, 1.0) * (1.0 - h)
    x0 = _uniform([batch], s_x, 0.0, 1.0) * (1.0 - w)
    return tf.stack([y0, x0, y0 + h, x0 + w], axis=1)


def random_crop_with_padding(images, seed, padding):
    """The standard CIFAR augmentation: reflect-pad by `padding` px, crop back at random."""
    b, h, w = tf.shape(images)[0], images.shape[1], images.shape[2]
    padded = tf.pad(images, [[0, 0], [padding, padding], [padding, padding], [0, 0]], "REFLECT")
    s_y, s_x = split_seed(seed, 2)
    dy = tf.random.stateless_uniform([b], s_y, 0, 2 * padding + 1, tf.int32)
    dx = tf.random.stateless_uniform([b], s_x, 0, 2 * padding + 1, tf.int32)
    hp, wp = h + 2 * padding - 1, w + 2 * padding - 1
    dy, dx = tf.cast(dy, tf.float32), tf.cast(dx, tf.float32)
    boxes = tf.stack([dy / hp, dx / wp, (dy + h - 1) / hp, (dx + w - 1) / wp], axis=1)
    return tf.image.crop_and_resize(padded, boxes, tf.range(b), [h, w])  # integer offsets: exact


def random_flip(images, seed, p=0.5):
    return _where(_bernoulli(tf.shape(images)[0], p, seed), tf.reverse(images, axis=[2]), images)


def plain_batches(images, size, batch_size):
    """(first index, float [b, size, size, 3] in [0, 1]) for consecutive batches of uint8 `images`,
    resized (antialiased) when not at `size`: the un-augmented inputs of a pass over a training set
    between epochs (DeepCluster's features and memory banks)."""
    for start in range(0, len(images), batch_size):
        batch = to_float(tf.constant(images[start:start + batch_size]))
        if batch.shape[1] != size or batch.shape[2] != size:
            batch = tf.image.resize(batch, (size, size), antialias=True)
        yield start, batch


def crop_and_flip(images, seed, padding=None, flip=True):
    """The light augmentation of the reconstruction methods and DIM: a padded random crop
    (`padding` px, none at 0; None: the standard CIFAR crop, 1/8 of the image size) and a random
    horizontal flip."""
    s_crop, s_flip = split_seed(seed, 2)
    if padding is None:
        padding = images.shape[1] // 8
    if padding:
        images = random_crop_with_padding(images, s_crop, padding)
    return random_flip(images, s_flip) if flip else images


def _rotate_hue(images, radians):
    # A hue shift is a rotation of the chroma plane in YIQ space: three small matmuls per image
    # instead of an RGB -> HSV -> RGB round trip.
    to_yiq = tf.constant([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
    to_rgb = tf.linalg.inv(to_yiq)
    c, s = tf.cos(radians), tf.sin(radians)
    one, zero = tf.ones_like(c), tf.zeros_like(c)
    rot = tf.stack([tf.stack([one, zero, zero], -1), tf.stack([zero, c, -s], -1),
                    tf.stack([zero, s, c], -1)], -2)  # [B, 3, 3]
    m = tf.einsum("ij,bjk,kl->bil", to_rgb, rot, to_yiq)
    return tf.einsum("bhwc,bdc->bhwd", images, m)


def color_jitter(images, seed, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1):
    """SimCLR colour distortion (strength s: 0.8s, 0.8s, 0.8s, 0.2s), one factor per image.
    Applied in a fixed order (brightness, contrast, saturation, hue); SimCLR shuffles it."""
    b = tf.shape(images)[0]
    s_b, s_c, s_s, s_h = split_seed(seed, 4)
    x = images * _uniform([b, 1, 1, 1], s_b, 1 - brightness, 1 + brightness)
    x = tf.clip_by_value(x, 0.0, 1.0)
    mean = tf.reduce_mean(tf.tensordot(x, _GRAY, axes=1), axis=[1, 2])[:, None, None, None]
    x = tf.clip_by_value((x - mean) * _uniform([b, 1, 1, 1], s_c, 1 - contrast, 1 + contrast) + mean, 0.0, 1.0)
    gray = tf.tensordot(x, _GRAY, axes=1)[..., None]
    x = tf.clip_by_value((x - gray) * _uniform([b, 1, 1, 1], s_s, 1 - saturation, 1 + saturation) + gray, 0.0, 1.0)
    x = _rotate_hue(x, _uniform([b], s_h, -hue, hue) * 2.0 * math.pi)
    return tf.clip_by_value(x, 0.0, 1.0)


def gaussian_blur(images, seed, sigma=(0.1, 2.0), p=0.5, kernel_fraction=0.1):
    """Per-image Gaussian blur (SimCLR: kernel 10% of the image side, sigma in [0.1, 2.0]),
    as one depthwise convolution with the batch folded into the channel axis."""
    b, h, w = tf.shape(images)[0], images.shape[1], images.shape[2]
    radius = max(1, int(h * kernel_fraction) // 2)
    s_sigma, s_p = split_seed(seed, 2)
    sig = _uniform([b], s_sigma, sigma[0], sigma[1])
    t = tf.range(-radius, radius + 1, dtype=tf.float32)
    k = tf.exp(-0.5 * (t[None, :] / sig[:, None]) ** 2)
    k = k / tf.reduce_sum(k, axis=1, keepdims=True)  # [B, K]
    k = tf.repeat(k, 3, axis=0)  # one kernel per (image, channel)
    x = tf.reshape(tf.transpose(images, [1, 2, 0, 3]), [1, h, w, -1])  # [1, H, W, B*3]
    x = tf.pad(x, [[0, 0], [radius, radius], [radius, radius], [0, 0]], "REFLECT")
    x = tf.nn.depthwise_conv2d(x, tf.transpose(k)[:, None, :, None], [1, 1, 1, 1], "VALID")
    x = tf.nn.depthwise_conv2d(x, tf.transpose(k)[None, :, :, None], [1, 1, 1, 1], "VALID")
    blurred = tf.transpose(tf.reshape(x, [h, w, b, 3]), [2, 0, 1, 3])
    return _where(_bernoulli(b, p, s_p), blurred, images)


def view_pair(images, seed, make_view):
    """{"view_a", "view_b"} of two-view methods: `make_view(float_images, seed, index)` for index
    0 and 1 with two independent seeds split from `seed` (the index lets asymmetric
    augmentations, as BYOL's, differ between the views)."""
    x = to_float(images)
    seed_a, seed_b = split_seed(seed, 2)
    return {"view_a": make_view(x, seed_a, 0), "view_b": make_view(x, seed_b, 1)}


def simclr_view_pair(images, seed, config):
    """`view_pair` of two SimCLR views (`simclr_view`) with a method config's `image_size`,
    `crop_scale`, `jitter_strength` and `blur` (Barlow Twins, VICReg, NNCLR)."""
    return view_pair(images, seed, lambda x, s, _: simclr_view(
        x, config.image_size, s, crop_scale=tuple(config.crop_scale), jitter_strength=config.jitter_strength,
        blur=config.blur))


def simclr_view(images, size, seed, crop_scale=(0.08, 1.0), jitter_strength=0.5, jitter_p=0.8,
                grayscale_p=0.2, blur=None):
    """One SimCLR view (Chen et al. 2020, appendix A): crop-resize, flip, colour jitter (p=0.8),
    grayscale (p=0.2), and Gaussian blur (p=0.5) when `blur` (default: images >= 96 px)."""
    s_crop, s_flip, s_jit, s_jp, s_gray, s_blur = split_seed(seed, 6)
    b = tf.shape(images)[0]
    x = random_flip(random_resized_crop(images, size, s_crop, scale=crop_scale), s_flip)
    s = jitter_strength
    x = _where(_bernoulli(b, jitter_p, s_jp), color_jitter(x, s_jit, 0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s), x)
    x = _where(_bernoulli(b, grayscale_p, s_gray), grayscale(x), x)
    if blur if blur is not None else size >= 96:
        x = gaussian_blur(x, s_blur)
    return x


# The Sobel kernels of IIC's and DeepCluster's official code (IIC: transforms.sobel_process),
# applied as cross-correlation with zero padding: d/dx = left column - right column, d/dy = top
# row - bottom row.
SOBEL_X = [[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]]
SOBEL_Y = [[1.0, 2.0, 1.0], [0.0, 0.0, 0.0], [-1.0, -2.0, -1.0]]


def sobel(images):
    """Sobel gradients of the grey images [B, H, W, 3] -> [B, H, W, 3]: (d/dx, d/dy, 0), zero
    padded at the borders (the official code's 3x3 convolutions with padding 1). The input of
    IIC and DeepCluster: it removes colour and raises contrast; values lie in [-4, 4]."""
    gray = tf.tensordot(tf.cast(images, tf.float32), _GRAY, axes=1)[..., None]
    kernels = tf.stack([tf.constant(SOBEL_X), tf.constant(SOBEL_Y)], axis=-1)[:, :, None, :]  # [3, 3, 1, 2]
    gradients = tf.nn.conv2d(gray, kernels, strides=1, padding="SAME")
    return tf.concat([gradients, tf.zeros_like(gray)], axis=-1)


def rotate(images, k):
    """Rotate every image by k * 90 degrees counter-clockwise (as np.rot90 on H, W)."""
    return tf.image.rot90(images, k)


def affine_transform(images, angles, scales=None, translations=None, fill_mode="reflect",
                     interpolation="bilinear"):
    """Rotate each image by angles[i] radians counter-clockwise (the direction of np.rot90)
    about its centre, zoom it by scales[i] (> 1 enlarges the content) and shift the content
    by translations[i] = (dx, dy) pixels (right, down). One ImageProjectiveTransformV3 for the
    batch; fill_mode: "reflect", "wrap", "nearest" or "constant" (zeros)."""
    b = tf.shape(images)[0]
    h, w = tf.cast(tf.shape(images)[1], tf.float32), tf.cast(tf.shape(images)[2], tf.float32)
    angles = tf.cast(angles, tf.float32)
    scales = tf.ones([b]) if scales is None else tf.cast(scales, tf.float32)
    t = tf.zeros([b, 2]) if translations is None else tf.cast(translations, tf.float32)
    # The op maps each OUTPUT pixel (x, y) to the INPUT point A (x, y) + offset, with
    # A = R(angle) / scale and the offset chosen so that the centre c moves by t:
    # in = A (out - c - t) + c.
    cos, sin = tf.cos(angles) / scales, tf.sin(angles) / scales
    cx, cy = (w - 1.0) / 2.0, (h - 1.0) / 2.0
    px, py = cx + t[:, 0], cy + t[:, 1]
    offset_x = cx - (cos * px - sin * py)
    offset_y = cy - (sin * px + cos * py)
    zeros = tf.zeros([b])
    transforms = tf.stack([cos, -sin, offset_x, sin, cos, offset_y, zeros, zeros], axis=1)
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images, transforms=transforms, output_shape=tf.shape(images)[1:3], fill_value=0.0,
        interpolation=interpolation.upper(), fill_mode=fill_mode.upper())


def solarize(images, seed, p=0.2, threshold=0.5):
    """Solarization (BYOL, Grill et al. 2020, appendix B): with probability p per image, every
    pixel value x >= threshold becomes 1 - x (x < threshold is kept)."""
    solarized = tf.where(images < threshold, images, 1.0 - images)
    return _where(_bernoulli(tf.shape(images)[0], p, seed), solarized, images)


def byol_view(images, size, seed, crop_scale=(0.08, 1.0), jitter=(0.4, 0.4, 0.2, 0.1), jitter_p=0.8,
              grayscale_p=0.2, blur_p=0.0, solarize_p=0.0):
    """One view of BYOL's augmentations (Grill et al. 2020, appendix B, table 6), also MoCo v3's
    and, with jitter (0.4, 0.4, 0.4, 0.1) and blur_p 0.5, SimSiam's (MoCo v2's): crop-resize,
    flip, colour jitter (brightness, contrast, saturation, hue) with p `jitter_p`, greyscale,
    Gaussian blur with p `blur_p` (sigma 0.1-2, kernel 10% of the side), solarize with p
    `solarize_p`. BYOL's two views differ: blur 1.0 / 0.1, solarize 0.0 / 0.2."""
    s_crop, s_flip, s_jit, s_jp, s_gray, s_blur, s_sol = split_seed(seed, 7)
    b = tf.shape(images)[0]
    x = random_flip(random_resized_crop(images, size, s_crop, scale=tuple(crop_scale)), s_flip)
    x = _where(_bernoulli(b, jitter_p, s_jp), color_jitter(x, s_jit, *jitter), x)
    x = _where(_bernoulli(b, grayscale_p, s_gray), grayscale(x), x)
    if blur_p > 0:
        x = gaussian_blur(x, s_blur, p=blur_p)
    if solarize_p > 0:
        x = solarize(x, s_sol, p=solarize_p)
    return x


def multi_crop(images, seed, large_size, small_size, num_large=2, num_small=6, large_scale=(0.14, 1.0),
               small_scale=(0.05, 0.14), view=None, large_kwargs=None, small_kwargs=None):
    """Multi-crop views (SwAV, Caron et al. 2020, section 3.2; DINO 2021): `num_large` crops of
    `large_size` px covering `large_scale` of the image area and `num_small` crops of
    `small_size` px covering `small_scale` (the papers: 2 x 224 px at 0.14-1 and 6 or 10 x 96 px
    at 0.05-0.14), each with its own random box and photometric augmentation.

    `view(images, size, seed, crop_scale=..., **kwargs)` makes one crop (default `simclr_view`);
    `large_kwargs` / `small_kwargs`: its extra arguments, one dict for all crops of that size or
    a list with one dict per crop (DINO's two global crops differ in blur and solarization).
    Returns (large [B, num_large, large_size, large_size, 3], small [B, num_small, small_size,
    small_size, 3]): crop k of image i is large[i, k]."""
    view = simclr_view if view is None else view
    seeds = split_seed(seed, num_large + num_small)

    def crops(count, size, scale, kwargs, first):
        kwargs = kwargs if isinstance(kwargs, (list, tuple)) else [kwargs or {}] * count
        if len(kwargs) != count:
            raise ValueError(f"multi_crop: {len(kwargs)} argument dicts for {count} crops.")
        out = [view(images, size, seeds[first + k], crop_scale=tuple(scale), **kwargs[k]) for k in range(count)]
        if not out:
            return tf.zeros([tf.shape(images)[0], 0, size, size, 3], images.dtype)
        return tf.stack(out, axis=1)

    return (crops(num_large, large_size, large_scale, large_kwargs, 0),
            crops(num_small, small_size, small_scale, small_kwargs, num_large))
