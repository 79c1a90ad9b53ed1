"""Heads that sit on the encoder during pre-training and are thrown away afterwards, and the
forward helpers that feed them: several crops (`multi_crop_forward`), stacks of patches
(`encode_stack`) and a backbone's intermediate maps (`stage_maps`)."""
import keras
import tensorflow as tf
from keras import layers

from zoo.backbones import feature_maps


def _hidden_layers(x, hidden_dim, count, sync_bn, name):
    """`count` x (Dense without bias -> BN -> ReLU), the hidden part of every MLP head here."""
    for i in range(count):
        x = layers.Dense(hidden_dim, use_bias=False, name=f"{name}_dense{i + 1}")(x)
        x = layers.BatchNormalization(momentum=0.9, epsilon=1e-5, synchronized=sync_bn, name=f"{name}_bn{i + 1}")(x)
        x = layers.ReLU()(x)
    return x


def projection_mlp(input_dim, hidden_dim=512, output_dim=128, num_layers=2, sync_bn=False, name="projector"):
    """SimCLR projection head g(h): (Dense -> BN -> ReLU) x (num_layers-1) -> Dense -> BN.
    The final BN (SimCLR v2 / google-research tf2 code) keeps the logits' scale stable."""
    inputs = keras.Input((input_dim,))
    x = _hidden_layers(inputs, hidden_dim, num_layers - 1, sync_bn, name)
    x = layers.Dense(output_dim, use_bias=False, name=f"{name}_out")(x)
    x = layers.BatchNormalization(momentum=0.9, epsilon=1e-5, center=False, synchronized=sync_bn,
                                  name=f"{name}_out_bn")(x)
    return keras.Model(inputs, x, name=name)


def linear_head(input_dim, output_dim, name="classifier"):
    """A single Dense layer (`{name}_dense`): a linear classifier (class logits) or projection."""
    inputs = keras.Input((input_dim,))
    return keras.Model(inputs, layers.Dense(output_dim, name=f"{name}_dense")(inputs), name=name)


def embedding_head(input_shape, embedding_dim, hidden_dim=None, out_norm="layer", hidden_bn=True, sync_bn=False,
                   name="embedding"):
    """x -> norm(nonlinear(x) + shortcut(x)) on the last axis, for vectors (input_shape (C,)) or
    maps ((h, w, C): Dense on the last axis is a 1x1 convolution). nonlinear: Dense(hidden) ->
    [BN] -> ReLU -> Dense(embedding_dim); shortcut: Dense(embedding_dim). out_norm "layer" (DIM's
    MI1x1ConvNet) or "batch" (AMDIM's output batch norm, its "FakeRKHSConvNet")."""
    inputs = keras.Input(tuple(input_shape))
    h = layers.Dense(hidden_dim or embedding_dim, use_bias=not hidden_bn, name=f"{name}_hidden")(inputs)
    if hidden_bn:
        h = layers.BatchNormalization(momentum=0.9, epsilon=1e-5, synchronized=sync_bn, name=f"{name}_hidden_bn")(h)
    h = layers.Dense(embedding_dim, use_bias=False, name=f"{name}_out")(layers.ReLU()(h))
    # No offset after the output norm (and no shortcut bias before batch norm, which removes it):
    # an offset of the candidates' embedding shifts a whole row of scores, to which InfoNCE and
    # DV are invariant, so it would be a parameter without gradient.
    shortcut = layers.Dense(embedding_dim, use_bias=out_norm == "layer", name=f"{name}_shortcut")(inputs)
    x = layers.Add()([h, shortcut])
    if out_norm == "layer":
        x = layers.LayerNormalization(epsilon=1e-5, center=False, name=f"{name}_out_ln")(x)
    else:
        x = layers.BatchNormalization(momentum=0.9, epsilon=1e-5, center=False, synchronized=sync_bn,
                                      name=f"{name}_out_bn")(x)
    return keras.Model(inputs, x, name=name)


def siamese_classifier(feature_dim, branches, branch_dim, hidden_dim, num_classes, sync_bn=False,
                       name="siamese_head"):
    """[B, branches, feature_dim] -> logits [B, num_classes]: an optional shared per-branch
    Dense -> BN -> ReLU (branch_dim), concatenation of the branches in order, an optional
    Dense -> BN -> ReLU (hidden_dim), then a Dense classifier (relative patch location, jigsaw)."""
    inputs = keras.Input((branches, feature_dim))
    x = inputs
    if branch_dim:
        x = layers.Dense(branch_dim, use_bias=False, name=f"{name}_branch")(x)
        x = layers.BatchNormalization(momentum=0.9, epsilon=1e-5, synchronized=sync_bn, name=f"{name}_branch_bn")(x)
        x = layers.ReLU()(x)
    x = layers.Reshape((branches * (branch_dim or feature_dim),))(x)
    if hidden_dim:
        x = layers.Dense(hidden_dim, use_bias=False, name=f"{name}_hidden")(x)
        x = layers.BatchNormalization(momentum=0.9, epsilon=1e-5, synchronized=sync_bn, name=f"{name}_hidden_bn")(x)
        x = layers.ReLU()(x)
    return keras.Model(inputs, layers.Dense(num_classes, name=f"{name}_out")(x), name=name)


def mlp_head(input_dim, hidden_dim, output_dim, num_layers=2, output_bn=False, sync_bn=False, name="mlp",
             output_bias=True):
    """The projectors and predictors of BYOL, SimSiam and MoCo v3: (Dense -> BN -> ReLU) x
    (num_layers - 1) -> Dense, then, if `output_bn`, a BN without scale and offset (SimSiam's
    and MoCo v3's `BatchNorm1d(affine=False)`). Hidden Dense layers have no bias (BN follows);
    the output Dense has one unless BN follows it or `output_bias` is False (Barlow Twins and
    VICReg, whose losses do not change when every embedding is shifted: it would get no gradient)."""
    inputs = keras.Input((input_dim,))
    x = _hidden_layers(inputs, hidden_dim, num_layers - 1, sync_bn, name)
    x = layers.Dense(output_dim, use_bias=output_bias and not output_bn, name=f"{name}_out")(x)
    if output_bn:
        x = layers.BatchNormalization(momentum=0.9, epsilon=1e-5, center=False, scale=False, synchronized=sync_bn,
                                      name=f"{name}_out_bn")(x)
    return keras.Model(inputs, x, name=name)


def multi_crop_forward(encoder, crop_groups, head=None, training=False):
    """Encoder (+ head) outputs of every crop of multi-crop views, [V, B, D] with crop v of image
    i at [v, i], crops in the order of `crop_groups` (a list of [B, k, h, w, 3] tensors, one size
    per group, e.g. the large then the small crops). As in the SwAV and DINO code, the encoder
    runs once per crop size on that size's crops concatenated along the batch axis (crop-major:
    one batch-norm batch of k*B images), and the head once on the features of all V crops."""
    features = []
    for crops in crop_groups:
        if crops.shape[1] == 0:
            continue
        x = tf.reshape(tf.transpose(crops, [1, 0, 2, 3, 4]), [-1, *crops.shape[2:]])  # row k*B + i
        features.append(encoder(x, training=training))
    out = tf.concat(features, axis=0)
    if head is not None:
        out = head(out, training=training)
    views = sum(crops.shape[1] for crops in crop_groups)
    return tf.reshape(out, [views, -1, out.shape[-1]])


def encode_stack(encoder, stack, training):
    """One encoder call on every patch of stack [B, K, h, w, C] (one BN batch of B*K patches);
    returns features [B, K, D], in the stack's order (relative patch, jigsaw, CPC, PIRL)."""
    k, shape = stack.shape[1], tf.shape(stack)
    features = encoder(tf.reshape(stack, tf.concat([[-1], shape[2:]], 0)), training=training)
    return tf.reshape(features, [-1, k, features.shape[-1]])


def stage_maps(backbone, names):
    """One functional model over the backbone's own layers (shared weights): float images ->
    [the named maps ..., the pooled features] (DIM, AMDIM)."""
    return keras.Model(backbone.input, feature_maps(backbone, names).outputs + [backbone.output],
                       name=f"{backbone.name}_stage_maps")


def map_shapes(maps_model, image_size):
    """[(H, W, C) of each output] of a maps model (feature_maps / stage_maps) at image_size px."""
    shapes = maps_model.compute_output_shape((1, image_size, image_size, 3))
    shapes = shapes if isinstance(shapes, list) else [shapes]
    return [tuple(shape[1:]) for shape in shapes]


class WeightNormalizedDense(layers.Layer):
    """x @ (V / ||V||): a Dense layer without bias whose every output unit's weight vector (a
    column of V) is divided by its norm in the forward pass, i.e. weight normalisation (Salimans
    & Kingma 2016) with the gain fixed at 1, DINO's last layer (`norm_last_layer=True`)."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)

    def build(self, input_shape):
        self.kernel = self.add_weight(name="kernel", shape=(input_shape[-1], self.units),
                                      initializer="glorot_uniform")

    def call(self, x):
        return tf.matmul(x, tf.math.l2_normalize(tf.cast(self.kernel, x.dtype), axis=0))

    def get_config(self):
        return {**super().get_config(), "units": self.units}


def dino_head(input_dim, hidden_dim=2048, bottleneck_dim=256, output_dim=65536, num_layers=3, batch_norm=False,
              sync_bn=False, name="dino_head"):
    """DINO's projection head (Caron et al. 2021, appendix; the official DINOHead): (Dense ->
    [BN] -> GELU) x (num_layers - 1) -> Dense to `bottleneck_dim` -> L2-normalise -> weight-
    normalised Dense to `output_dim` without bias. Dense layers start from a truncated normal
    (std 0.02) with zero biases, as in the official code. The last layer computes in float32
    (its outputs are divided by a teacher temperature of 0.04)."""
    init = keras.initializers.TruncatedNormal(stddev=0.02)
    inputs = keras.Input((input_dim,))
    x = inputs
    for i in range(num_layers - 1):
        x = layers.Dense(hidden_dim, kernel_initializer=init, name=f"{name}_dense{i + 1}")(x)
        if batch_norm:
            x = layers.BatchNormalization(momentum=0.9, epsilon=1e-5, synchronized=sync_bn, name=f"{name}_bn{i + 1}")(x)
        x = layers.Activation("gelu", name=f"{name}_gelu{i + 1}")(x)
    x = layers.Dense(bottleneck_dim, kernel_initializer=init, name=f"{name}_bottleneck")(x)
    x = layers.UnitNormalization(axis=-1, name=f"{name}_l2")(x)
    x = WeightNormalizedDense(output_dim, dtype="float32", name=f"{name}_last")(x)
    return keras.Model(inputs, x, name=name)


def upsample_by_doublings(x, factor, channels, sync_bn=False, name="decoder"):
    """(4x4 transposed convolution with stride 2 -> BN -> ReLU) log2(factor) times, starting at
    `channels` and halving each time (at least 8): the up-sampling of the decoders."""
    for i in range(factor.bit_length() - 1):
        x = layers.Conv2DTranspose(max(8, channels >> i), 4, strides=2, padding="same", use_bias=False,
                                   name=f"{name}_up{i + 1}")(x)
        x = layers.BatchNormalization(momentum=0.9, epsilon=1e-5, synchronized=sync_bn, name=f"{name}_up{i + 1}_bn")(x)
        x = layers.ReLU()(x)
    return x


def upsampling_decoder(input_shape, output_size, channels, out_channels=3, sync_bn=False, name="decoder"):
    """Maps [h, w, C] -> images [output_size, output_size, out_channels] in [0, 1] (the
    reconstruction methods' decoder, DCGAN's generator stack): (4x4 transposed convolution with
    stride 2 -> BN -> ReLU) once per doubling, starting at `channels` and halving each time (at
    least 8), then a 3x3 convolution and a sigmoid. output_size / h must be a power of 2."""
    h, w = input_shape[0], input_shape[1]
    factor = output_size // h if h else 0
    if h != w or factor < 1 or factor * h != output_size or factor & (factor - 1):
        raise ValueError(f"{name}: cannot up-sample a {h} x {w} map to {output_size} x {output_size} px by doublings; "
                         "the image size over the map size must be a power of 2 (e.g. 32 px images, 4 x 4 maps).")
    inputs = keras.Input(tuple(input_shape))
    x = upsample_by_doublings(inputs, factor, channels, sync_bn, name)
    x = layers.Conv2D(out_channels, 3, padding="same", name=f"{name}_out")(x)
    return keras.Model(inputs, layers.Activation("sigmoid", name=f"{name}_sigmoid")(x), name=name)
