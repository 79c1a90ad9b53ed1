"""Autoencoder baselines: the backbone's last feature map decoded back to the image, L2 on every
pixel; the reference point of reconstruction features (../shared/METHODS.md, section B; the deep
autoencoder of Hinton & Salakhutdinov, Science 2006, made convolutional).

- `autoencoder`: the plain autoencoder; the encoder sees the image it must reproduce.
- `denoising_autoencoder` (Vincent, Larochelle, Bengio, Manzagol, ICML 2008): the same network
  and loss, the input corrupted and the clean image the target. `noise`: "masking" (the paper's
  corruption: every pixel value set to 0 with probability `masking_fraction`, independently per
  value; the paper's nu, 0.25 here) or "gaussian" (additive N(0, noise_std^2), then clipped to the
  [0, 1] range of the images, as every view of the zoo is).

Both are one class; the two names differ only in their default `noise` ("none" / "masking"), and
either accepts the other's setting. Network: the backbone's stage4 map (4 x 4 at 32 px) ->
`zoo.heads.upsampling_decoder` (transposed convolutions, BN, ReLU, then a sigmoid) -> the image.
The decoder is a head, dropped at export; the encoder is evaluated on clean images.
Loss: each image's mean over pixels and channels of (decoded - clean)^2, averaged over the batch.
"""
import dataclasses

import tensorflow as tf

from zoo import augment, patches
from zoo.backbones import feature_maps
from zoo.heads import map_shapes, upsampling_decoder
from zoo.methods.base import MethodConfig, SSLMethod
from zoo.registry import register_method

NOISES = ("none", "gaussian", "masking")


@dataclasses.dataclass
class AutoencoderConfig(MethodConfig):
    noise: str = "none"             # "none" (plain), "gaussian" or "masking" (denoising)
    noise_std: float = 0.1          # gaussian: standard deviation, in units of the [0, 1] pixel range
    masking_fraction: float = 0.25  # masking: probability that a pixel value is set to 0 (Vincent et al.'s nu)
    decoder_channels: int | None = None  # channels of the first up-sampling layer; None: the map's
    crop_padding: int | None = None  # CIFAR-style random crop (reflect-pad, crop back); None: size // 8; 0: off
    flip: bool = True


@dataclasses.dataclass
class DenoisingAutoencoderConfig(AutoencoderConfig):
    noise: str = "masking"


def corrupt(images, noise, seed, noise_std=0.1, masking_fraction=0.25):
    """The denoising input: images [B, H, W, C] in [0, 1] corrupted by `noise` ("none": unchanged)."""
    if noise == "gaussian":
        return tf.clip_by_value(images + noise_std * tf.random.stateless_normal(tf.shape(images), seed), 0.0, 1.0)
    if noise == "masking":
        return images * tf.cast(tf.random.stateless_uniform(tf.shape(images), seed) >= masking_fraction, images.dtype)
    return images


def reconstruction_l2(decoded, images):
    """Batch mean of each image's mean squared error over its pixels and channels, in float32."""
    squared = tf.square(tf.cast(decoded, tf.float32) - tf.cast(images, tf.float32))
    return tf.reduce_mean(tf.reduce_mean(squared, axis=[1, 2, 3]))


@register_method("autoencoder")
class Autoencoder(SSLMethod):
    Config = AutoencoderConfig

    def build_heads(self):
        c = self.config
        if c.noise not in NOISES:
            raise ValueError(f"{self.method_name}: noise={c.noise!r}; choose one of {NOISES}.")
        if c.noise_std < 0 or not 0 <= c.masking_fraction < 1:
            raise ValueError(f"{self.method_name}: need noise_std >= 0 and 0 <= masking_fraction < 1; "
                             f"got {c.noise_std} and {c.masking_fraction}.")
        self.feature_map = feature_maps(self.encoder, ["stage4"])
        map_shape = map_shapes(self.feature_map, c.image_size)[0]
        self.decoder = upsampling_decoder(map_shape, c.image_size, c.decoder_channels or map_shape[-1],
                                          sync_bn=c.sync_bn, name="autoencoder_decoder")

    def make_views(self, images, labels, seed):
        """{"images": the clean crop [B, S, S, 3] in [0, 1] (the target), "inputs": what the
        encoder sees (the same crop for the plain autoencoder, corrupted for the denoising one)}."""
        c = self.config
        s_augment, s_noise = augment.split_seed(seed, 2)
        x = patches.resize_to(augment.to_float(images), c.image_size)
        x = augment.crop_and_flip(x, s_augment, c.crop_padding, c.flip)
        return {"images": x, "inputs": corrupt(x, c.noise, s_noise, c.noise_std, c.masking_fraction)}

    def decode(self, inputs, training=False):
        """The decoded image [B, S, S, 3] in [0, 1]."""
        maps = self.feature_map(inputs, training=training)
        return self.decoder(maps[0] if isinstance(maps, (list, tuple)) else maps, training=training)

    def pretext_loss(self, views, training=False):
        return reconstruction_l2(self.decode(views["inputs"], training=training), views["images"]), {}

    def view_panels(self, views, index):
        c = self.config
        noise = {"none": "the image itself", "gaussian": f"gaussian noise, std {c.noise_std:g}",
                 "masking": f"masking noise, {c.masking_fraction:.0%} of values set to 0"}[c.noise]
        return [(f"input: {noise}", views["inputs"][index].numpy()),
                ("target: the clean image", views["images"][index].numpy())]


@register_method("denoising_autoencoder")
class DenoisingAutoencoder(Autoencoder):
    Config = DenoisingAutoencoderConfig
