"""``python -m quantcore integer FOLDER -o DIR``: each quantized variant's integer layers as JSON and a C header."""

from __future__ import annotations

import argparse
import sys

from quantcore.errors import QuantcoreError
from quantcore.integer.export import write_exports
from quantcore.integer.view import DEFAULT_IMAGES, integer_view


def add_integer_arguments(parser: argparse.ArgumentParser) -> None:
    """The integer command's arguments."""
    parser.add_argument("folder")
    parser.add_argument("-o", "--out", required=True, metavar="DIR", help="writes DIR/<variant>.json, <variant>.h")
    parser.add_argument("--images", type=int, default=DEFAULT_IMAGES, help="samples the checks run on")
    parser.add_argument(
        "--trust", action="store_true", help="let TorchScript and pickles load from outside the models root"
    )


def integer_command(args: argparse.Namespace) -> int:
    """Run the integer view on a folder and write each variant's JSON and header; 2 on a bad folder."""
    from quantcore import load_model_variants

    try:
        variants = load_model_variants(args.folder, trusted=True if args.trust else None)
        report = integer_view(variants, images=args.images)
    except (QuantcoreError, ValueError) as exc:
        print(f"error: {args.folder}: {exc}", file=sys.stderr)
        return 2
    for note in report.notes:
        print(f"note: {note}", file=sys.stderr)
    if not report.variants:
        print(f"error: {args.folder}: no quantized variant with integer conv/dense layers", file=sys.stderr)
        return 2
    for path in write_exports(report.variants, args.out):
        print(path)
    return 0
