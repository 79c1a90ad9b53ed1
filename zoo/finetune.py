"""Fine-tuning helpers for a loaded encoder: freeze its first stages, and give it a lower
learning rate than the new head.

    encoder = zoo.load("simclr_resnet18w025_cifar10", trainable=True)
    zoo.finetune.freeze_stages(encoder, 2)            # stem + stage1 frozen, stage2..4 train
                                                      # (a ViT: patch_embed + block1 frozen)
    inputs = keras.Input((32, 32, 3), dtype="uint8")
    model = keras.Model(inputs, keras.layers.Dense(10)(encoder(inputs)))
    model.compile(zoo.finetune.SplitOptimizer(encoder, keras.optimizers.Adam(1e-3), encoder_lr_scale=0.1),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))

Keras 3 has no per-variable learning-rate multiplier, so `SplitOptimizer` holds two
optimizers, one for the encoder's variables and one for everything else, and routes each
gradient to its owner. Both the stage freezing (each layer's trainable flag) and the
SplitOptimizer with its state survive `model.save("ft.keras")` / `keras.saving.load_model`;
importing this module registers both Keras classes a saved model may name (ImageEncoder,
SplitOptimizer), so in a new process `import zoo.finetune` before `load_model`.
"""
import keras

import zoo.encoder  # noqa: F401  (registers ImageEncoder with Keras, for load_model)
from zoo.backbones import STAGE_NAMES

__all__ = ["freeze_stages", "stages", "stage_of", "SplitOptimizer"]


def stages(backbone):
    """The units `freeze_stages` freezes, from the input to the output: "stem", "stage1" ..
    "stage4" for a ResNet; "patch_embed", "block1" .. "blockK", "encoder_norm" (the final
    LayerNorm) for a ViT."""
    from zoo.backbones import vit
    if vit.is_vit(backbone):
        return ["patch_embed", *vit.block_names(backbone), "encoder_norm"]
    return list(STAGE_NAMES)


def stage_of(layer_name, units=STAGE_NAMES):
    """The unit of `units` (default: the ResNet stages "stem", "stage1" ... "stage4") a backbone
    layer belongs to: the layer named so, or one named "<unit>_..." ("block1_out", not
    "block10"). None for the layers without weights to train (input normalisation, position
    embedding, final pooling)."""
    for stage in units:
        if layer_name == stage or layer_name.startswith(stage + "_"):
            return stage
    return None


def freeze_stages(encoder, k):
    """Freeze the first `k` units of a loaded encoder's backbone (`stages(backbone)`): for a
    ResNet in the order stem, stage1, stage2, stage3, stage4 (k=0: nothing frozen, k=5: the
    whole backbone); for a ViT patch_embed, block1 .. blockK, encoder_norm (k=K+2: all). The
    others are made trainable. Frozen batch-norm layers also stop updating their statistics
    (Keras runs a non-trainable BatchNormalization in inference mode). Returns the names of
    the frozen layers. Call it before `model.compile`."""
    backbone = getattr(encoder, "backbone", encoder)
    units = stages(backbone)
    if not 0 <= k <= len(units):
        raise ValueError(f"freeze_stages: k={k}; expected 0..{len(units)} for {backbone.name!r} "
                         f"(stages in order: {', '.join(units)}).")
    frozen_stages = set(units[:k])
    encoder.trainable = True
    frozen = []
    for layer in backbone.layers:
        stage = stage_of(layer.name, units)
        layer.trainable = stage not in frozen_stages
        if stage in frozen_stages and layer.weights:
            frozen.append(layer.name)
    return frozen


def _scaled_copy(optimizer, scale):
    config = optimizer.get_config()
    lr = config.get("learning_rate")
    if not isinstance(lr, (int, float)):
        raise ValueError("SplitOptimizer: encoder_lr_scale needs a float learning rate on the head optimizer; "
                         "with a schedule, pass encoder_optimizer= explicitly.")
    config["learning_rate"] = lr * scale
    config["name"] = f"{optimizer.name}_encoder"
    return optimizer.__class__.from_config(config)


@keras.saving.register_keras_serializable(package="zoo")
class SplitOptimizer(keras.optimizers.Optimizer):
    """Two optimizers in one: `encoder_optimizer` for the variables of `encoder`,
    `head_optimizer` for every other variable of the model being trained.

    SplitOptimizer(encoder, keras.optimizers.Adam(1e-3), encoder_lr_scale=0.1) trains the
    encoder with Adam at 1e-4 and the head at 1e-3; pass `encoder_optimizer=` for anything
    else (another class, a schedule). Setting `learning_rate` (e.g. from a callback) sets the
    head's and scales the encoder's by the same factor. Both optimizers keep their own state;
    `iterations` counts training steps.

    `model.save` / `keras.saving.load_model` keep it with both optimizers' state: its config
    names the encoder's variables by path (`encoder_variables`), which is how a reloaded
    SplitOptimizer, having no encoder object, tells them from the head's. `encoder` may be
    that list of paths too."""

    def __init__(self, encoder, head_optimizer, encoder_optimizer=None, encoder_lr_scale=0.1, name="split"):
        super().__init__(learning_rate=0.0, name=name)
        head_optimizer = keras.optimizers.get(head_optimizer)
        self.head_optimizer = head_optimizer
        self.encoder_optimizer = (keras.optimizers.get(encoder_optimizer) if encoder_optimizer is not None
                                  else _scaled_copy(head_optimizer, encoder_lr_scale))
        self.encoder_lr_scale = encoder_lr_scale
        if isinstance(encoder, (list, tuple)) and all(isinstance(p, str) for p in encoder):
            self._encoder_ids = None  # rebuilt from a config: match the variables by path
            self.encoder_variables = list(encoder)
        else:
            self._encoder_ids = {id(v) for v in encoder.weights}
            self.encoder_variables = [v.path for v in encoder.weights]
        if not self.encoder_variables:
            raise ValueError("SplitOptimizer: the encoder has no weights; pass the loaded encoder.")

    def _split(self, variables):
        if self._encoder_ids is not None:
            enc = [i for i, v in enumerate(variables) if id(v) in self._encoder_ids]
        else:
            enc = self._split_by_path(variables)
        taken = set(enc)
        return enc, [i for i in range(len(variables)) if i not in taken]

    def _split_by_path(self, variables):
        wanted = set(self.encoder_variables)
        enc = [i for i, v in enumerate(variables) if v.path in wanted]
        paths = [variables[i].path for i in enc]
        if len(set(paths)) != len(paths):
            twice = sorted({p for p in paths if paths.count(p) > 1})
            raise ValueError(f"SplitOptimizer: variable paths {twice[:3]} occur more than once in the model, so a "
                             "reloaded SplitOptimizer cannot tell the encoder's from the others'. Load the model "
                             "with compile=False and compile it with SplitOptimizer(encoder, ...) again.")
        return enc

    def build(self, var_list):
        enc, head = self._split(var_list)
        self.encoder_optimizer.build([var_list[i] for i in enc])
        self.head_optimizer.build([var_list[i] for i in head])
        super().build(var_list)

    @property
    def variables(self):
        return self._variables + self.encoder_optimizer.variables + self.head_optimizer.variables

    # model.save stores the two optimizers' state under their own attribute names; this one
    # stores only its own (iterations, learning rate), not their variables a second time.
    def save_own_variables(self, store):
        for i, variable in enumerate(self._variables):
            store[str(i)] = variable

    def load_own_variables(self, store):
        if len(store.keys()) != len(self._variables):
            raise ValueError(f"SplitOptimizer: the saved state has {len(store.keys())} variables, this optimizer "
                             f"{len(self._variables)}; was it saved by another version of zoo.finetune?")
        for i, variable in enumerate(self._variables):
            variable.assign(store[str(i)])

    def apply(self, grads, trainable_variables=None):
        trainable_variables = list(trainable_variables if trainable_variables is not None
                                   else self._trainable_variables)
        grads = list(grads)
        if not self.built:
            with keras.name_scope(self.name, caller=self):
                self.build(trainable_variables)
            self.built = True
        enc, head = self._split(trainable_variables)
        for optimizer, index in ((self.encoder_optimizer, enc), (self.head_optimizer, head)):
            if index:
                optimizer.apply([grads[i] for i in index], [trainable_variables[i] for i in index])
        self.iterations.assign_add(1)

    def stateless_apply(self, optimizer_variables, grads, trainable_variables):
        raise NotImplementedError("SplitOptimizer runs on the TensorFlow backend's stateful path only.")

    @property
    def learning_rate(self):
        return self.head_optimizer.learning_rate

    @learning_rate.setter
    def learning_rate(self, value):
        self.head_optimizer.learning_rate = value
        self.encoder_optimizer.learning_rate = value * self.encoder_lr_scale

    def finalize_variable_values(self, var_list):
        enc, head = self._split(var_list)
        self.encoder_optimizer.finalize_variable_values([var_list[i] for i in enc])
        self.head_optimizer.finalize_variable_values([var_list[i] for i in head])

    def get_config(self):
        return {"name": self.name, "encoder_lr_scale": self.encoder_lr_scale,
                "head_optimizer": keras.optimizers.serialize(self.head_optimizer),
                "encoder_optimizer": keras.optimizers.serialize(self.encoder_optimizer),
                "encoder_variables": list(self.encoder_variables)}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        return cls(config.pop("encoder_variables"),
                   keras.optimizers.deserialize(config.pop("head_optimizer"), custom_objects=custom_objects),
                   encoder_optimizer=keras.optimizers.deserialize(config.pop("encoder_optimizer"),
                                                                  custom_objects=custom_objects),
                   **config)
