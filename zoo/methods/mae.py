"""MAE: Masked Autoencoders Are Scalable Vision Learners (He, Chen, Xie, Li, Dollar, Girshick,
CVPR 2022), on the zoo's ViT backbones (zoo.backbones.vit; a ResNet cannot drop tokens).

Views: a random resized crop (scale 0.2-1) and a horizontal flip, and for every image a random
order of its T patches (the argsort of uniform noise, seeded by the view seed): the first
round(T * (1 - mask_ratio)) patches of the order are visible, the other 75 % are removed.

Forward: the encoder embeds all patches (+ fixed sin-cos positions), keeps only the visible
tokens and runs its blocks and final LayerNorm on them alone (`encode_visible`). A light decoder
(`MAEDecoder`: a linear map to the decoder width, a shared learned mask token for every removed
patch, the tokens put back in grid order, fixed sin-cos positions, `decoder_depth` transformer
blocks, LayerNorm, a linear map to p*p*3 pixels) predicts every patch.

Loss: the MSE between the prediction and the target pixels of the REMOVED patches only, the
target being each patch of the (mean/std-normalised) image normalised by its own mean and
variance (the paper's "norm_pix_loss", its best setting: (x - mean) / sqrt(var + 1e-6), with the
unbiased variance of the official code); per patch the mean over its p*p*3 values, then the mean
over the removed patches of the batch (every image removes the same number).

Differences from the paper: no class token (the zoo's ViT mean-pools its tokens; MAE trains no
class token anyway), and the decoder is 2 blocks of width 128 (the paper's is 8 x 512 for
ViT-L; its ablation shows 1 block suffices for fine-tuning). The exported encoder is the ViT,
which at test time sees all patches. The paper's optimizer (AdamW, betas 0.9 / 0.95, base lr
1.5e-4 x batch / 256, weight decay 0.05, 40 warm-up epochs, cosine) is in the recipes.
"""
import dataclasses

import keras
import tensorflow as tf
from keras import layers

from zoo import augment
from zoo.backbones import vit
from zoo.methods.base import MethodConfig, SSLMethod
from zoo.registry import register_method


@dataclasses.dataclass
class MAEConfig(MethodConfig):
    backbone: str = "vit_tiny"
    mask_ratio: float = 0.75
    decoder_dim: int = 128
    decoder_depth: int = 2
    decoder_heads: int = 4
    norm_pix_loss: bool = True      # targets normalised per patch (the paper's default)
    crop_scale: tuple = (0.2, 1.0)


def num_visible(num_patches, mask_ratio):
    """Patches the encoder sees: round(T * (1 - mask_ratio)), at least 1, at most T - 1."""
    return min(num_patches - 1, max(1, int(round(num_patches * (1.0 - mask_ratio)))))


def random_patch_order(batch, num_patches, seed):
    """[batch, T] int32: a uniformly random permutation of the patches of every image."""
    noise = tf.random.stateless_uniform([batch, num_patches], seed)
    return tf.argsort(noise, axis=1, stable=True, direction="ASCENDING")


def normalize_patches(patches, epsilon=1e-6):
    """Every patch [..., P] minus its mean, over sqrt(its unbiased variance + epsilon)."""
    mean = tf.reduce_mean(patches, axis=-1, keepdims=True)
    count = tf.cast(tf.shape(patches)[-1], patches.dtype)
    var = tf.reduce_sum(tf.square(patches - mean), axis=-1, keepdims=True) / (count - 1.0)
    return (patches - mean) / tf.sqrt(var + epsilon)


def masked_patch_loss(prediction, target, removed):
    """Mean over the removed patches (removed [B, T] = 1) of the per-patch mean squared error."""
    per_patch = tf.reduce_mean(tf.square(tf.cast(prediction, tf.float32) - tf.cast(target, tf.float32)), axis=-1)
    removed = tf.cast(removed, tf.float32)
    return tf.reduce_sum(per_patch * removed) / tf.reduce_sum(removed)


@keras.saving.register_keras_serializable(package="zoo")
class MAEDecoder(layers.Layer):
    """(visible latents [B, k, D_enc], restore [B, T]) -> predicted pixels [B, T, p*p*3].
    `restore[b, j]` is the place of patch j in the image's (visible first) patch order."""

    def __init__(self, grid, patch_pixels, dim=128, depth=2, heads=4, **kwargs):
        super().__init__(**kwargs)
        self.grid, self.patch_pixels, self.dim, self.depth, self.heads = grid, patch_pixels, dim, depth, heads
        self.embed = layers.Dense(dim, name="decoder_embed")
        self.blocks = [vit.TransformerBlock(dim, heads, name=f"decoder_block{i + 1}") for i in range(depth)]
        self.norm = layers.LayerNormalization(epsilon=vit.LAYER_NORM_EPSILON, name="decoder_norm")
        self.pred = layers.Dense(patch_pixels, name="decoder_pred")

    def build(self, latent_shape, restore_shape=None):
        # Normal(0.02), as the official code's mask token.
        self.mask_token = self.add_weight(shape=(1, 1, self.dim), name="mask_token",
                                          initializer=keras.initializers.RandomNormal(stddev=0.02))
        self.embed.build(latent_shape)
        tokens = (latent_shape[0], self.grid * self.grid, self.dim)
        for block in self.blocks:
            block.build(tokens)
        self.norm.build(tokens)
        self.pred.build(tokens)

    def call(self, latent, restore, training=False):
        x = self.embed(latent)
        batch, visible = tf.shape(x)[0], tf.shape(x)[1]
        masks = tf.tile(tf.cast(self.mask_token, x.dtype), [batch, self.grid * self.grid - visible, 1])
        x = tf.gather(tf.concat([x, masks], axis=1), restore, batch_dims=1)  # back to grid order
        x = x + vit.sincos_position_embedding(self.grid, self.grid, self.dim, x.dtype)[None]
        for block in self.blocks:
            x = block(x, training=training)
        return self.pred(self.norm(x))

    def get_config(self):
        return {**super().get_config(), "grid": self.grid, "patch_pixels": self.patch_pixels, "dim": self.dim,
                "depth": self.depth, "heads": self.heads}


@register_method("mae")
class MAE(SSLMethod):
    Config = MAEConfig

    def build_heads(self):
        c = self.config
        if not vit.is_vit(self.encoder):
            raise ValueError(f"mae: backbone {c.backbone!r} is not a ViT; MAE's encoder must drop tokens. Use one of "
                             f"{sorted(vit.VIT_SPECS)}, e.g. zoo.create('mae', backbone='vit_tiny').")
        if not 0.0 < c.mask_ratio < 1.0:
            raise ValueError(f"mae: mask_ratio {c.mask_ratio} must be in (0, 1), e.g. 0.75 as in the paper.")
        self.patch = vit.patch_size(self.encoder)
        self.grid = c.image_size // self.patch
        self.num_patches = self.grid * self.grid
        self.num_visible = num_visible(self.num_patches, c.mask_ratio)
        self.decoder = MAEDecoder(self.grid, self.patch * self.patch * 3, c.decoder_dim, c.decoder_depth,
                                  c.decoder_heads, name="decoder")
        self.decoder.build((None, self.num_visible, self.feature_dim), (None, self.num_patches))

    def make_views(self, images, labels, seed):
        c = self.config
        s_crop, s_flip, s_order = augment.split_seed(seed, 3)
        x = augment.random_resized_crop(augment.to_float(images), c.image_size, s_crop, scale=c.crop_scale)
        x = augment.random_flip(x, s_flip)
        order = random_patch_order(tf.shape(images)[0], self.num_patches, s_order)
        return {"images": x, "patch_order": order}

    def encode_visible(self, images, order, training=False):
        """The encoder on the visible patches only: [B, k, D] for the first k patches of `order`."""
        tokens = vit.embed_patches(self.encoder, images)
        visible = tf.gather(tokens, order[:, :self.num_visible], batch_dims=1)
        return vit.encode_tokens(self.encoder, visible, training=training)

    def targets(self, images):
        """Per-patch pixels [B, T, p*p*3] of the mean/std-normalised images, normalised per patch."""
        c = self.config
        x = (images - tf.constant(c.mean, images.dtype)) / tf.constant(c.std, images.dtype)
        patches = vit.patchify(x, self.patch)
        return normalize_patches(patches) if c.norm_pix_loss else patches

    def predict_patches(self, images, order, training=False):
        """(predicted patches [B, T, p*p*3], removed [B, T] 1/0) for images and a patch order."""
        restore = tf.argsort(order, axis=1, stable=True)
        prediction = self.decoder(self.encode_visible(images, order, training), restore, training=training)
        return prediction, tf.cast(restore >= self.num_visible, tf.float32)

    def pretext_loss(self, views, training=False):
        images = views["images"]
        prediction, removed = self.predict_patches(images, views["patch_order"], training)
        return masked_patch_loss(prediction, self.targets(images), removed), {}

    def view_panels(self, views, index):
        """The view and the visible patches the encoder sees (removed ones grey)."""
        images = views["images"][index:index + 1]
        removed = tf.cast(tf.argsort(views["patch_order"][index:index + 1], axis=1) >= self.num_visible, images.dtype)
        patches = vit.patchify(images, self.patch)
        shown = patches * (1.0 - removed[..., None]) + 0.5 * removed[..., None]
        masked = vit.unpatchify(shown, self.patch, self.config.image_size, self.config.image_size)
        return [("view", images[0].numpy()), (f"visible {self.num_visible}/{self.num_patches}", masked[0].numpy())]
