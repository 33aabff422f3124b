"""`cvfer weights`: the synthetic face recognisers cvfer ships (list them, retrain them)."""

from __future__ import annotations

import argparse
from pathlib import Path

RECOGNISER_NAMES = {"f_I": "identity-encoder", "tfen-face": "tfen-face"}


def _list(args: argparse.Namespace) -> int:
    from cvfer.train.identity import SHIPPED_FILES, identity_cache_dir, read_shipped_record, shipped_weights_dir

    folder = Path(args.dir) if args.dir else shipped_weights_dir()
    record = read_shipped_record(folder)["files"]
    own_dir = identity_cache_dir()
    print(f"{folder}:")
    for recogniser, name in SHIPPED_FILES.items():
        path = folder / name
        entry = record.get(name)
        size = f"{path.stat().st_size / 1e6:.2f} MB" if path.is_file() else "missing"
        quality = (
            f"held-out AUC {entry['verification']['auc']:.4f}, EER {100 * entry['verification']['eer']:.2f} %"
            if entry
            else "no record in weights.json"
        )
        print(f"  {name} ({recogniser}): {size}; {quality}")
        if own_dir is not None and (own_dir / name).is_file():
            print(f"    replaced by {own_dir / name} ($CVFER_CACHE)")
    return 0


def _retrain(args: argparse.Namespace) -> int:
    import torch

    from cvfer.io import check_output_folder
    from cvfer.train.identity import SHIPPED_FILES, retrain_shipped_weights, shipped_weights_dir

    torch.set_num_threads(args.threads)
    out_dir = check_output_folder(args.out or shipped_weights_dir(), "--out")
    recognisers = tuple(RECOGNISER_NAMES[name] for name in args.only) if args.only else tuple(SHIPPED_FILES)
    record = retrain_shipped_weights(out_dir, recognisers)
    for name in (SHIPPED_FILES[recogniser] for recogniser in recognisers):
        entry = record["files"][name]
        check = entry["reduced_check"]
        print(
            f"{out_dir / name}: {entry['bytes'] / 1e6:.2f} MB, held-out AUC {entry['verification']['auc']:.4f} "
            f"(reduced check {check['auc']:.4f}), {entry['training']['seconds']:.0f} s"
        )
    print(f"recorded in {out_dir / 'weights.json'}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `weights` verb with its `list` and `retrain` actions."""
    parser = subparsers.add_parser(
        "weights",
        help="the synthetic face recognisers cvfer ships: list or retrain them",
        description=(
            "cvfer ships two small face recognisers trained on synthetic identities: MIC's f_I "
            "(--identity-encoder synthetic, the default on the synthetic benchmark) and TFEN's F "
            "(face_weights=synthetic). They load from the package; files of the same names in "
            "$CVFER_CACHE/identity replace them. `retrain` trains both again with the shipped recipe "
            "(about 1 + 15 minutes on one core) and records their held-out verification in weights.json."
        ),
        epilog=(
            "examples:\n"
            "  cvfer weights list\n"
            "  cvfer weights retrain --out runs/weights\n"
            "  cvfer weights retrain --only f_I --out $CVFER_CACHE/identity"
        ),
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser(
        "list",
        help="where the recognisers are, their size and held-out verification",
        epilog="example:\n  cvfer weights list",
    )
    listing.add_argument("--dir", help="a folder of retrained weights (default: the package's)")
    listing.set_defaults(func=_list)
    retrain = actions.add_parser(
        "retrain",
        help="train the shipped recognisers again (same recipe, float16) and record their quality",
        epilog=(
            "examples:\n"
            "  cvfer weights retrain --out runs/weights      # then compare with `cvfer weights list`\n"
            "  cvfer weights retrain                         # replace the package's own files"
        ),
    )
    retrain.add_argument("--out", help="folder to write into (default: the package's cvfer/weights/)")
    retrain.add_argument(
        "--only", action="append", choices=tuple(RECOGNISER_NAMES), help="retrain only this one (repeatable)"
    )
    retrain.add_argument("--threads", type=int, default=1, help="CPU threads (default 1: reproduces the record)")
    retrain.set_defaults(func=_retrain)
