"""Run folders for the tests that only read one (eval, export, faults): made without training."""
import os


def untrained_run_folder(out, data, width=0.125, method="simclr"):
    """A run folder of `method` as zoo-train leaves it (config.yaml + the checkpoint of step 5),
    with the weights of the seed-0 initialisation. Returns `out`."""
    import keras
    from trainers import recipes
    from trainers.train import build_method, prepare_run_dir
    recipe = recipes.load_recipe(method)
    recipe.update(data=data, epochs=1, batch_size=20, knn_every_epochs=0, checkpoint_every_steps=0)
    recipe["method_config"]["width"] = width
    prepare_run_dir(out, recipe)
    keras.utils.set_random_seed(0)
    os.makedirs(os.path.join(out, "checkpoints"))
    build_method(recipe).save_weights(os.path.join(out, "checkpoints", "step-00000005.weights.h5"))
    return out
