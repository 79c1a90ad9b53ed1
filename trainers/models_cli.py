"""`zoo-models [--method M] [--dataset D] [--json]`: the pretrained encoders that ship with the
package, one row each (zoo.list_models(details=True)).

    zoo-models                      # table: name, method, labels?, params, image size, feature dim,
                                    # val kNN, linear, epochs; caveats as notes below it
    zoo-models --method simclr      # only SimCLR's; --dataset cifar10 likewise
    zoo-models --json               # every field of zoo.describe(name), as a JSON list
"""
import argparse
import json
import sys

# (header, right-aligned?, how the zoo.describe value is shown)
COLUMNS = [
    ("name", False, lambda d: d["name"] + (" *" if d["caveat"] else "")),
    ("method", False, lambda d: d["method"]),
    ("labels?", False, lambda d: "yes" if d["uses_labels"] else "no"),
    ("params", True, lambda d: "?" if d["parameters"] is None else f"{d['parameters'] / 1e6:.2f}M"),
    ("image size", True, lambda d: str(d["image_size"])),
    ("feature dim", True, lambda d: str(d["feature_dim"])),
    ("val kNN", True, lambda d: "-" if d["knn_top1"] is None else f"{100 * d['knn_top1']:.1f}%"),
    ("linear", True, lambda d: "-" if d["linear_top1"] is None else f"{100 * d['linear_top1']:.1f}%"),
    ("epochs", True, lambda d: "-" if d["epochs"] is None else str(d["epochs"])),
]


def table(details):
    """The rows of `details` (zoo.describe dicts) as aligned text lines, a header first."""
    cells = [[header for header, _, _ in COLUMNS]] + [[show(d) for _, _, show in COLUMNS] for d in details]
    widths = [max(len(row[i]) for row in cells) for i in range(len(COLUMNS))]
    return ["  ".join(cell.rjust(w) if right else cell.ljust(w)
                      for cell, w, (_, right, _) in zip(row, widths, COLUMNS)).rstrip() for row in cells]


def main(argv=None):
    import zoo
    p = argparse.ArgumentParser(prog="zoo-models", description=__doc__.split("\n\n")[0])
    p.add_argument("--method", help="only the encoders trained with this method, e.g. simclr")
    p.add_argument("--dataset", help="only the encoders trained on this data set, e.g. cifar10")
    p.add_argument("--json", action="store_true", help="print zoo.describe of each as a JSON list")
    args = p.parse_args(argv)
    details = zoo.list_models(method=args.method, dataset=args.dataset, details=True)
    if not details:
        everything = zoo.list_models(details=True)
        given = " ".join(f"--{key} {value}" for key, value in (("method", args.method), ("dataset", args.dataset))
                         if value)
        print(f"error: no pretrained encoder matches {given}. "
              f"Shipped: methods {', '.join(sorted({d['method'] for d in everything}))}; "
              f"data sets {', '.join(sorted({str(d['dataset']) for d in everything}))}. "
              "zoo.list_methods() lists every trainable method, with or without a shipped encoder.",
              file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(details, indent=2))
        return 0
    print("\n".join(table(details)))
    splits = sorted({d["eval_split"] for d in details if d["eval_split"]})
    print(f"\nval kNN / linear: top-1 on {'; '.join(splits) or 'no recorded split'}. "
          "zoo.describe(name) has every field (backbone, width, images seen, minutes, ...).")
    for d in details:
        if d["caveat"]:
            print(f"* {d['name']}: {d['caveat']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
