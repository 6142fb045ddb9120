"""Headless CLI: ``python -m quantcore summarize FOLDER``, ``quantize FOLDER [options] -o DIR``,
``integer FOLDER -o DIR``, ``sweep FOLDER [options]``, ``report FOLDER -o report.html``."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from quantcore import get_model_summary, load_model_variants
from quantcore.errors import QuantcoreError
from quantcore.integer.cli import add_integer_arguments, integer_command
from quantcore.quantize.cli import add_recipe_arguments, add_sweep_arguments, quantize_command, sweep_command
from quantcore.report.cli import add_report_arguments, report_command


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m quantcore", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    summarize = commands.add_parser("summarize", help="print the JSON summary of a variant folder")
    summarize.add_argument("folder")
    summarize.add_argument(
        "--trust", action="store_true", help="let TorchScript and pickles load from outside the models root"
    )
    quantize = commands.add_parser(
        "quantize", help="quantize a folder's float ONNX model by a recipe with onnxruntime (model.onnx, recipe.json)"
    )
    add_recipe_arguments(quantize)
    quantize.add_argument("-o", "--out", required=True, metavar="DIR", help="writes DIR/<name>/model.onnx, recipe.json")
    integer = commands.add_parser(
        "integer", help="each quantized variant's integer layers, checked on the samples: <variant>.json and .h"
    )
    add_integer_arguments(integer)
    sweep = commands.add_parser("sweep", help="rank a recipe's layers: each kept in float, and each quantized alone")
    add_recipe_arguments(sweep)
    add_sweep_arguments(sweep)
    report = commands.add_parser(
        "report", help="the standard views as one offline HTML file, and their tables as CSV/JSON in a ZIP"
    )
    add_report_arguments(report)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "quantize":
        return quantize_command(args)
    if args.command == "integer":
        return integer_command(args)
    if args.command == "sweep":
        return sweep_command(args)
    if args.command == "report":
        return report_command(args)

    try:
        variants = load_model_variants(args.folder, trusted=True if args.trust else None)
    except QuantcoreError as exc:
        print(f"error: {args.folder}: {exc}", file=sys.stderr)
        return 2
    json.dump(get_model_summary(variants), sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
