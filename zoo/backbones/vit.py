"""Vision Transformer (Dosovitskiy et al., ICLR 2021) as a zoo backbone, in the form MAE
(He et al., CVPR 2022) and MoCo v3 (Chen, Xie, He, ICCV 2021) use it.

images [N, H, W, 3] in [0, 1] -> normalize (mean/std) -> `patch_embed` (a p x p conv with stride
p, i.e. a linear map of every flattened patch) -> `pos_embed` (+ fixed 2-D sin-cos position
embedding) -> `tokens` [N, T, D] (row-major over the (H/p) x (W/p) grid) -> `block1` ...
`blockK` (pre-norm transformer blocks; outputs also named `block1_out` ...) -> `encoder_norm`
(LayerNorm) -> `avg_pool` (mean over tokens) -> features [N, D].

Choices, and why:
- Features are the MEAN-POOLED tokens after the final LayerNorm; there is no class token. The
  zoo exports one feature vector per image for every method, and a class token is trained by
  nothing in MAE (its loss is on patch tokens only), while mean pooling works for all methods
  (MAE's own fine-tuning uses global pooling; He et al. report it as good as the class token).
- Position embeddings are FIXED 2-D sin-cos (MAE's and MoCo v3's choice; in MoCo v3's ablation
  they do no worse than learned ones). They have no weights and are computed from the actual
  grid, so the backbone runs at any image size divisible by the patch.
- `width` multiplies the embedding dimension (rounded to a multiple of 4 and of the head count;
  the MLP is 4x it); depth and heads stay. vit_tiny at width 0.125 is dim 24, the harness size.
- `stem` and `sync_bn` are accepted and ignored (a ViT has neither a stem choice nor batch norm).

MAE's encoder sees only the visible patches, so the pieces are exposed, sharing the weights:
`embed_patches(backbone, images)` (images -> position-embedded tokens), `encode_tokens(backbone,
tokens)` (any subset of tokens -> normalised tokens) and `pool_tokens`; `patchify` / `unpatchify`
map images to [N, T, p*p*3] pixel rows in the same token order.
"""
import dataclasses
import math

import keras
import tensorflow as tf
from keras import layers


@dataclasses.dataclass(frozen=True)
class ViTSpec:
    patch: int
    dim: int
    depth: int
    heads: int
    mlp_ratio: int = 4


# 32 px: patch 4 -> 8 x 8 = 64 tokens. 224 px: the standard /16 models (14 x 14 = 196 tokens).
VIT_SPECS = {
    "vit_tiny": ViTSpec(patch=4, dim=192, depth=12, heads=3),
    "vit_tiny16": ViTSpec(patch=16, dim=192, depth=12, heads=3),
    "vit_small16": ViTSpec(patch=16, dim=384, depth=12, heads=6),
    "vit_base16": ViTSpec(patch=16, dim=768, depth=12, heads=12),
}
LAYER_NORM_EPSILON = 1e-6  # as timm and the MAE / MoCo v3 code


def sincos_position_embedding(height, width, dim, dtype=tf.float32):
    """[height * width, dim] fixed 2-D sin-cos embedding of a row-major grid (MAE's
    get_2d_sincos_pos_embed): the first dim/2 channels encode the column, the last dim/2 the
    row, each as [sin(pos * w_k), cos(pos * w_k)] with w_k = 10000^(-k / (dim / 4))."""
    quarter = dim // 4
    omega = 1.0 / tf.pow(10000.0, tf.range(quarter, dtype=tf.float32) / float(quarter))
    rows, cols = tf.meshgrid(tf.range(height, dtype=tf.float32), tf.range(width, dtype=tf.float32), indexing="ij")

    def encode(pos):
        angles = tf.reshape(pos, [-1, 1]) * omega[None, :]
        return tf.concat([tf.sin(angles), tf.cos(angles)], axis=1)

    return tf.cast(tf.concat([encode(cols), encode(rows)], axis=1), dtype)


@keras.saving.register_keras_serializable(package="zoo")
class SinCosPositionEmbedding2D(layers.Layer):
    """Adds the fixed 2-D sin-cos embedding to a patch map [N, h, w, D] (no weights)."""

    def call(self, x):
        shape = tf.shape(x)
        dim = x.shape[-1]
        embedding = sincos_position_embedding(shape[1], shape[2], dim, x.dtype)
        return x + tf.reshape(embedding, [1, shape[1], shape[2], dim])

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package="zoo")
class TransformerBlock(layers.Layer):
    """Pre-norm transformer block: x + MHA(LN(x)); x + MLP(LN(x)), MLP = Dense(r*D, GELU) -> Dense(D)."""

    def __init__(self, dim, heads, mlp_ratio=4, **kwargs):
        super().__init__(**kwargs)
        if dim % heads:
            raise ValueError(f"TransformerBlock: dim {dim} is not divisible by heads {heads}.")
        self.dim, self.heads, self.mlp_ratio = dim, heads, mlp_ratio
        self.norm1 = layers.LayerNormalization(epsilon=LAYER_NORM_EPSILON, name="norm1")
        self.attn = layers.MultiHeadAttention(heads, dim // heads, name="attn")
        self.norm2 = layers.LayerNormalization(epsilon=LAYER_NORM_EPSILON, name="norm2")
        self.fc1 = layers.Dense(mlp_ratio * dim, activation="gelu", name="fc1")
        self.fc2 = layers.Dense(dim, name="fc2")

    def build(self, input_shape):
        self.norm1.build(input_shape)
        self.attn.build(input_shape, input_shape)
        self.norm2.build(input_shape)
        self.fc1.build(input_shape)
        self.fc2.build((*input_shape[:-1], self.mlp_ratio * self.dim))

    def call(self, x, training=False):
        y = self.norm1(x)
        x = x + self.attn(y, y, training=training)
        return x + self.fc2(self.fc1(self.norm2(x)))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "dim": self.dim, "heads": self.heads, "mlp_ratio": self.mlp_ratio}


def scaled_dim(dim, heads, width):
    """dim * width rounded to a multiple of lcm(4, heads) (sin-cos needs 4 | D, attention heads | D)."""
    step = math.lcm(4, heads)
    return step * max(1, int(round(dim * width / step)))


def vision_transformer(spec, width=1.0, image_size=None, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                       name="vit"):
    """A ViT as a functional `keras.Model`: [N, H, W, 3] in [0, 1] -> [N, D] mean-pooled tokens.
    It runs at any H, W that are multiples of `spec.patch`; `image_size` (the training size) is
    only checked to be one."""
    if width <= 0:
        raise ValueError(f"width must be > 0, got {width}.")
    if image_size is not None and image_size % spec.patch:
        raise ValueError(f"{name}: image_size {image_size} is not a multiple of the patch size {spec.patch}; "
                         f"resize the images to a multiple of {spec.patch} px.")
    dim = scaled_dim(spec.dim, spec.heads, width)
    inputs = keras.Input((None, None, 3), name="images")
    x = layers.Normalization(mean=list(mean), variance=[s * s for s in std], name="normalize")(inputs)
    x = layers.Conv2D(dim, spec.patch, strides=spec.patch, name="patch_embed")(x)
    x = SinCosPositionEmbedding2D(name="pos_embed")(x)
    x = layers.Reshape((-1, dim), name="tokens")(x)
    for i in range(1, spec.depth + 1):
        x = TransformerBlock(dim, spec.heads, spec.mlp_ratio, name=f"block{i}")(x)
        x = layers.Identity(name=f"block{i}_out")(x)
    x = layers.LayerNormalization(epsilon=LAYER_NORM_EPSILON, name="encoder_norm")(x)
    features = layers.GlobalAveragePooling1D(name="avg_pool")(x)
    return keras.Model(inputs, features, name=name)


# ---- pieces for methods that work on tokens (MAE) -----------------------------------------

def is_vit(backbone):
    return any(layer.name == "patch_embed" for layer in backbone.layers)


def _check_vit(backbone):
    if not is_vit(backbone):
        raise ValueError(f"backbone {backbone.name!r} is not a ViT (no 'patch_embed' layer); build one with "
                         f"build_backbone({sorted(VIT_SPECS)[0]!r}) or another of {sorted(VIT_SPECS)}.")


def patch_size(backbone):
    _check_vit(backbone)
    return backbone.get_layer("patch_embed").kernel_size[0]


def depth(backbone):
    _check_vit(backbone)
    return sum(isinstance(layer, TransformerBlock) for layer in backbone.layers)


def block_names(backbone):
    """"block1" ... "blockK": the per-block outputs (layers f"{name}_out", tokens [N, T, D])."""
    return [f"block{i}" for i in range(1, depth(backbone) + 1)]


def embed_patches(backbone, images):
    """images [N, H, W, 3] in [0, 1] -> position-embedded tokens [N, T, D], the input of the
    first block, with the backbone's layers (shared weights)."""
    _check_vit(backbone)
    for name in ("normalize", "patch_embed", "pos_embed", "tokens"):
        images = backbone.get_layer(name)(images)
    return images


def encode_tokens(backbone, tokens, training=False):
    """The transformer blocks and the final LayerNorm on any set of tokens [N, t, D] (e.g. only
    the visible ones), with the backbone's weights."""
    for name in block_names(backbone):
        tokens = backbone.get_layer(name)(tokens, training=training)
    return backbone.get_layer("encoder_norm")(tokens)


def pool_tokens(backbone, tokens):
    """Encoded tokens [N, t, D] -> features [N, D], as the backbone's output."""
    return backbone.get_layer("avg_pool")(tokens)


def patchify(images, patch):
    """[N, H, W, C] -> [N, (H/p)(W/p), p*p*C]: patches in row-major grid order (the token
    order), each flattened as (row, column, channel)."""
    n, h, w, c = tf.shape(images)[0], images.shape[1], images.shape[2], images.shape[3]
    x = tf.reshape(images, [n, h // patch, patch, w // patch, patch, c])
    x = tf.transpose(x, [0, 1, 3, 2, 4, 5])
    return tf.reshape(x, [n, (h // patch) * (w // patch), patch * patch * c])


def unpatchify(patches, patch, height, width, channels=3):
    """The inverse of `patchify`: [N, T, p*p*C] -> [N, height, width, C]."""
    n = tf.shape(patches)[0]
    x = tf.reshape(patches, [n, height // patch, width // patch, patch, patch, channels])
    x = tf.transpose(x, [0, 1, 3, 2, 4, 5])
    return tf.reshape(x, [n, height, width, channels])


__all__ = ["VIT_SPECS", "ViTSpec", "vision_transformer", "TransformerBlock", "SinCosPositionEmbedding2D",
           "sincos_position_embedding", "is_vit", "patch_size", "depth", "block_names", "embed_patches",
           "encode_tokens", "pool_tokens", "patchify", "unpatchify"]
