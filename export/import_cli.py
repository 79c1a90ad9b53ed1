"""`zoo-import-weights PATH --method METHOD --name NAME --license LICENSE [--to DIR]`: import a
torchvision-layout ResNet checkpoint (.safetensors, or .pth / .pth.tar / .pt when torch is
installed) as a zoo export folder that `zoo.load(DIR/NAME)` loads.

The tensors are read and checked by `zoo.import_weights` (prefix, heads dropped, missing /
unexpected / misshapen tensors refused by name); the folder is written like `zoo-export`'s
(export/saved_model.py), with metadata["imported"] naming the source file, its sha256 and the
original licence, which the model card states.
"""
import argparse
import os


def import_checkpoint(path, method, name, license, to="published", url=None, paper=None, prefix=None,
                      dataset="imagenet", saved_model=True, overwrite=False):
    """Convert the checkpoint `path` and write the export folder `to/name`; returns its path."""
    from export.saved_model import write_export
    from zoo.import_weights import convert, import_metadata
    from zoo.hub import check_name
    check_name(name, "--name")
    if not method or not isinstance(method, str):
        raise ValueError(f"method={method!r}: name the method that trained the checkpoint, e.g. mocov2, dino, swav.")
    encoder, info = convert(path, prefix=prefix)
    meta = import_metadata(name, encoder, info, method, path, license, url=url, paper=paper, dataset=dataset)
    return write_export(encoder, meta, to, overwrite=overwrite, saved_model=saved_model)


def main(argv=None):
    p = argparse.ArgumentParser(prog="zoo-import-weights", description=__doc__.split("\n\n")[0])
    p.add_argument("path", help="the checkpoint: .safetensors, or .pth / .pth.tar / .pt (needs torch)")
    p.add_argument("--format", default="torchvision", choices=["torchvision"],
                   help="layout of the checkpoint's tensors (torchvision ResNet-18/34/50 state dict)")
    p.add_argument("--method", required=True, help="the method that trained it, e.g. mocov2, dino, swav, barlow_twins")
    p.add_argument("--name", required=True, help="name of the encoder, e.g. dino_resnet50_imagenet")
    p.add_argument("--license", required=True,
                   help="the original checkpoint's licence, stated in the model card (e.g. 'CC-BY-NC 4.0')")
    p.add_argument("--to", default="published", help="folder to write the export folder into (default ./published)")
    p.add_argument("--url", help="where the checkpoint was published (for the model card)")
    p.add_argument("--paper", help="the paper to credit (for the model card)")
    p.add_argument("--prefix", help="key prefix of the ResNet in the state dict (default: found automatically)")
    p.add_argument("--dataset", default="imagenet", help="what the authors trained it on (default imagenet)")
    p.add_argument("--no-saved-model", action="store_true", help="skip the SavedModel (Keras files only)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing export of the same name")
    args = p.parse_args(argv)
    from trainers.errors import user_errors
    with user_errors():
        folder = import_checkpoint(args.path, args.method, args.name, args.license, to=args.to, url=args.url,
                                   paper=args.paper, prefix=args.prefix, dataset=args.dataset,
                                   saved_model=not args.no_saved_model, overwrite=args.overwrite)
    print(f"imported {os.path.basename(args.path)} as {args.name} into {os.path.abspath(folder)}")
    print(f"load it with: zoo.load({os.path.abspath(folder)!r})")


if __name__ == "__main__":
    main()
