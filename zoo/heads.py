"""Heads that sit on the encoder during pre-training and are thrown away afterwards."""
import keras
from keras import layers


def projection_mlp(input_dim, hidden_dim=512, output_dim=128, num_layers=2, sync_bn=False, name="projector"):
    """SimCLR projection head g(h): (Dense -> BN -> ReLU) x (num_layers-1) -> Dense -> BN.
    The final BN (SimCLR v2 / google-research tf2 code) keeps the logits' scale stable."""
    inputs = keras.Input((input_dim,))
    x = inputs
    for i in range(num_layers - 1):
        x = layers.Dense(hidden_dim, use_bias=False, name=f"{name}_dense{i + 1}")(x)
        x = layers.BatchNormalization(momentum=0.9, epsilon=1e-5, synchronized=sync_bn, name=f"{name}_bn{i + 1}")(x)
        x = layers.ReLU()(x)
    x = layers.Dense(output_dim, use_bias=False, name=f"{name}_out")(x)
    x = layers.BatchNormalization(momentum=0.9, epsilon=1e-5, center=False, synchronized=sync_bn,
                                  name=f"{name}_out_bn")(x)
    return keras.Model(inputs, x, name=name)


def linear_classifier(input_dim, num_classes, name="classifier"):
    """A single Dense layer from features to class logits."""
    inputs = keras.Input((input_dim,))
    return keras.Model(inputs, layers.Dense(num_classes, name=f"{name}_dense")(inputs), name=name)
