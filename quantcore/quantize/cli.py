"""``python -m quantcore quantize FOLDER ...``: one recipe from the command line, as model.onnx + recipe.json."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path
from typing import Any

from quantcore.quantize.recipe import ActivationType, CalibrationMethodName, QuantFormatName, Recipe, WeightType


def add_recipe_arguments(parser: argparse.ArgumentParser) -> None:
    """The recipe's options as flags (shared by ``quantize`` and ``sweep``)."""
    parser.add_argument("folder", help="variant folder holding the float ONNX model")
    parser.add_argument("--recipe", type=Path, metavar="JSON", help="start from a recipe.json (flags override it)")
    parser.add_argument("--name", help="the recipe variant's name (default: made from the options)")
    parser.add_argument("--format", choices=[m.value for m in QuantFormatName])
    parser.add_argument("--activation", choices=[m.value for m in ActivationType])
    parser.add_argument("--weight", choices=[m.value for m in WeightType])
    parser.add_argument("--per-channel", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--reduce-range", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--symmetric-activations", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--symmetric-weights", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--calibration", type=str.lower, choices=[m.value.lower() for m in CalibrationMethodName])
    parser.add_argument("--percentile", type=float)
    parser.add_argument("--calibration-images", type=int, metavar="N")
    parser.add_argument("--test-set", metavar="DIR", help="calibrate on this test set instead of samples.npz")
    parser.add_argument("--exclude", action="append", default=[], metavar="LAYER",
                        help="keep LAYER in float (repeat, or comma-separated)")  # fmt: skip
    parser.add_argument("--override", action="append", default=[], metavar="LAYER=weight:TYPE[,activation:TYPE]",
                        help="a per-layer type, e.g. conv1=weight:int8")  # fmt: skip
    parser.add_argument("--trust", action="store_true", help="let TorchScript and pickles load from outside the root")


def parse_overrides(texts: list[str]) -> dict[str, dict[str, str]]:
    """``LAYER=weight:TYPE[,activation:TYPE]`` lines as recipe overrides.

    Raises:
        ValueError: a line of another form.
    """
    found: dict[str, dict[str, str]] = {}
    for text in texts:
        layer, sep, spec = text.partition("=")
        if not sep or not layer.strip():
            raise ValueError(f"--override {text!r}: expected LAYER=weight:TYPE[,activation:TYPE]")
        parts = {}
        for item in spec.split(","):
            what, colon, kind = item.partition(":")
            if not colon or what.strip() not in ("weight", "activation"):
                raise ValueError(f"--override {text!r}: each part is weight:TYPE or activation:TYPE")
            parts[what.strip()] = kind.strip()
        found[layer.strip()] = parts
    return found


def recipe_from_args(args: argparse.Namespace) -> Recipe:
    """The recipe the flags (over an optional recipe.json) describe.

    Raises:
        RecipeError, ValueError: a flag's value is not usable.
    """
    from quantcore.quantize.saved import read_manifest

    base: dict[str, Any] = read_manifest(args.recipe)[0].as_dict() if args.recipe else {}
    given = {
        "name": args.name, "format": args.format, "activation": args.activation, "weight": args.weight,
        "per_channel": args.per_channel, "reduce_range": args.reduce_range,
        "symmetric_activations": args.symmetric_activations, "symmetric_weights": args.symmetric_weights,
        "calibration": args.calibration, "percentile": args.percentile,
        "calibration_images": args.calibration_images, "test_set": args.test_set,
    }  # fmt: skip
    changed = {k: v for k, v in given.items() if v is not None and k != "name"}
    base.update({k: v for k, v in given.items() if v is not None})
    exclude = [e.strip() for text in args.exclude for e in text.split(",") if e.strip()]
    if exclude:
        changed["exclude"] = base["exclude"] = exclude
    if args.override:
        changed["overrides"] = base["overrides"] = parse_overrides(args.override)
    if args.name is None and (not args.recipe or changed):
        base.pop("name", None)  # a changed recipe is named after its options again
    return Recipe.from_dict(base)


def quantize_command(args: argparse.Namespace) -> int:
    """Make one recipe and write it under ``-o``; prints what was written as JSON."""
    from quantcore import load_model_variants
    from quantcore.errors import QuantcoreError
    from quantcore.quantize.build import make_recipe
    from quantcore.quantize.saved import write_recipe

    try:
        recipe = recipe_from_args(args)
        variants = load_model_variants(args.folder, trusted=True if args.trust else None)
        with contextlib.redirect_stdout(sys.stderr):  # onnxruntime prints calibration progress; stdout is the JSON
            result = make_recipe(variants, recipe)
        written = write_recipe(result, args.out)
    except (QuantcoreError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    json.dump({"recipe": f"recipe:{result.recipe.name}", "folder": str(written),
               "files": ["model.onnx", "recipe.json"], "sha256": result.sha256, "bytes": len(result.data),
               "calibrated": result.calibrated, "seconds": round(result.seconds, 3),
               "options": result.manifest["onnxruntime"]["quantize_static"]}, sys.stdout, indent=2)  # fmt: skip
    sys.stdout.write("\n")
    return 0


def add_sweep_arguments(parser: argparse.ArgumentParser) -> None:
    """``sweep``'s own flags, beside the recipe's."""
    parser.add_argument("--images", type=int, default=256, metavar="N", help="samples each job scores (default 256)")
    parser.add_argument("--workers", type=int, metavar="N", help="local worker processes (default: one per core)")
    parser.add_argument("--ray", metavar="ADDRESS", help="run the jobs on this Ray cluster (or set QP_RAY_ADDRESS)")
    parser.add_argument("--keep-worst", type=int, metavar="K", help="also make the recipe with the worst K in float")
    parser.add_argument("-o", "--out", metavar="DIR", help="with --keep-worst: write that recipe under DIR/<name>/")


def sweep_command(args: argparse.Namespace) -> int:
    """Sweep a recipe over the folder's layers; prints the ranked table as JSON."""
    from quantcore import load_model_variants
    from quantcore.errors import QuantcoreError
    from quantcore.quantize.build import make_recipe
    from quantcore.quantize.executors import LocalPool, RayCluster, default_executor
    from quantcore.quantize.saved import write_recipe
    from quantcore.quantize.sweep import keep_worst_in_float, sensitivity_sweep
    from quantcore.report.quantize_tables import sweep_json

    try:
        if args.keep_worst is not None and not args.out:
            raise ValueError("--keep-worst writes a recipe: give -o DIR too")
        recipe = recipe_from_args(args)
        variants = load_model_variants(args.folder, trusted=True if args.trust else None)
        executor = RayCluster(args.ray) if args.ray else LocalPool(args.workers) if args.workers else default_executor()
        with contextlib.redirect_stdout(sys.stderr):
            report = sensitivity_sweep(variants, recipe, images=args.images, executor=executor)
            shown = sweep_json(report)
            if args.keep_worst is not None:
                mixed = make_recipe(variants, keep_worst_in_float(report, args.keep_worst))
                shown["kept_worst"] = {"recipe": f"recipe:{mixed.recipe.name}", "exclude": list(mixed.recipe.exclude),
                                       "folder": str(write_recipe(mixed, args.out))}  # fmt: skip
    except (QuantcoreError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    json.dump(shown, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0
