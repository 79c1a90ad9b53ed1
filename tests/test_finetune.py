"""Fine-tuning helpers: freeze the first k stages, a lower learning rate on the encoder than on
the head, and a shipped encoder fine-tuned for a few steps on `shapes` beats chance."""
import keras
import numpy as np
import pytest

import zoo
from zoo.finetune import SplitOptimizer, freeze_stages, stage_of

NAME = "simclr_resnet18w025_cifar10"


def _model(encoder, dense_seed=0):
    inputs = keras.Input((32, 32, 3), dtype="uint8")
    head = keras.layers.Dense(10, kernel_initializer=keras.initializers.GlorotUniform(dense_seed))
    return keras.Model(inputs, head(encoder(inputs)))


def test_freeze_stages():
    encoder = zoo.load(NAME, trainable=True)
    all_trainable = len(encoder.trainable_weights)
    assert freeze_stages(encoder, 0) == [] and len(encoder.trainable_weights) == all_trainable
    frozen = freeze_stages(encoder, 2)
    assert frozen and {stage_of(n) for n in frozen} == {"stem", "stage1"}
    trainable_stages = {stage_of(w.path.split("/")[0]) for w in encoder.trainable_weights}
    assert trainable_stages == {"stage2", "stage3", "stage4"}
    assert not encoder.backbone.get_layer("stem_bn").trainable  # BN statistics frozen too
    freeze_stages(encoder, 5)
    assert encoder.trainable_weights == []
    freeze_stages(encoder, 1)  # unfreezing works as well
    assert {stage_of(w.path.split("/")[0]) for w in encoder.trainable_weights} == {
        "stage1", "stage2", "stage3", "stage4"}
    with pytest.raises(ValueError, match="k=6"):
        freeze_stages(encoder, 6)


def test_split_optimizer_scales_the_encoder_learning_rate():
    """With plain SGD the step is lr * gradient, so one step moves the encoder's weights by
    exactly encoder_lr_scale times what the same optimizer alone would."""
    keras.utils.set_random_seed(0)
    images = zoo.data.load_arrays("shapes?n=120", "train").images[:16]
    labels = np.arange(16) % 10
    deltas = []
    for optimizer_for in (lambda enc: keras.optimizers.SGD(0.1),
                          lambda enc: SplitOptimizer(enc, keras.optimizers.SGD(0.1), encoder_lr_scale=0.25)):
        encoder = zoo.load(NAME, trainable=True)
        freeze_stages(encoder, 5)  # BN in inference mode: the same gradients in both runs
        for layer in encoder.backbone.layers:
            if not isinstance(layer, keras.layers.BatchNormalization) and layer.weights:
                layer.trainable = True
        model = _model(encoder)
        before = [w.numpy().copy() for w in model.trainable_weights]
        optimizer = optimizer_for(encoder)
        model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.train_on_batch(images, labels)
        deltas.append([w.numpy() - b for w, b in zip(model.trainable_weights, before)])
        is_encoder = [any(w is v for v in encoder.weights) for w in model.trainable_weights]
    assert any(is_encoder) and not all(is_encoder)
    for plain, split, enc in zip(deltas[0], deltas[1], is_encoder):
        np.testing.assert_allclose(split, plain * (0.25 if enc else 1.0), rtol=1e-4, atol=1e-7)
    assert int(optimizer.iterations.numpy()) == 1
    optimizer.learning_rate = 0.01  # e.g. from a callback: the ratio is kept
    assert float(optimizer.encoder_optimizer.learning_rate) == pytest.approx(0.0025)


def test_shipped_encoder_fine_tunes_above_chance_on_shapes():
    keras.utils.set_random_seed(0)
    encoder = zoo.load(NAME, trainable=True)
    freeze_stages(encoder, 2)
    model = _model(encoder)
    model.compile(SplitOptimizer(encoder, keras.optimizers.Adam(3e-3), encoder_lr_scale=0.1),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    train, val = zoo.data.load_arrays("shapes?n=1200", "train"), zoo.data.load_arrays("shapes?n=1200", "val")
    model.fit(train.images, train.labels, batch_size=50, epochs=2, verbose=0)  # 40 steps
    accuracy = model.evaluate(val.images, val.labels, verbose=0)[1]
    assert accuracy > 0.3, accuracy  # 10 classes: chance is 0.1
