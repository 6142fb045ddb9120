"""The bundled int8 and uint8 ONNX variants' own recipes, as ``recipes/<name>/recipe.json`` beside them.

    python -m scripts.resnet8_recipes                        # models/resnet8 from Debian's Fashion-MNIST
    python -m scripts.resnet8_recipes --out DIR --fashion-mnist DIR

``scripts/build_resnet8.py`` quantizes with onnxruntime's ``quantize_static``
(QDQ, MinMax, per-channel int8 weights; int8 activations for ``resnet8_int8.onnx``,
uint8 for ``resnet8_uint8.onnx``) on ``per_class`` training images of every class,
drawn by the card's seed. Each recipe here says exactly that in the
playground's recipe format. It is made again with the playground's own
``make_recipe`` and its ``recipe.json`` written only when the graph made is
the variant's graph, node for node and initializer for initializer (the
variant's file adds only the build's ``metadata_props``). No model is written
beside it: the variant is that model.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from quantcore import load_model_variants
from quantcore.data import datasets
from quantcore.errors import QuantcoreError
from quantcore.load import CARD_NAME, Status, VariantKey
from quantcore.quantize import Recipe, make_recipe
from quantcore.quantize.saved import MANIFEST_NAME, RECIPES_DIR, VariantRecipe
from scripts.resnet8_measure import DEFAULT_OUT, VARIANT_FILES
from scripts.resnet8_train import draw_seed

log = logging.getLogger(__name__)

ACTIVATIONS = {VariantKey.ONNX_INT8: "int8", VariantKey.ONNX_UINT8: "uint8"}
METADATA_NOTE = "the variant's file is what quantize_static wrote plus the build's metadata_props"


class NotReproducedError(QuantcoreError, RuntimeError):
    """The recipe does not make the variant's graph (the recipe.json would be untrue, so none is written)."""


def bundled_recipes(data_dir: Path, *, seed: int, per_class: int) -> dict[VariantKey, Recipe]:
    """The recipes of the build's int8 and uint8 ONNX variants, named after their files' stems."""
    draw = {"split": "train", "per_class": per_class, "seed": draw_seed(seed, "calibration")}
    images = per_class * len(datasets.FASHION_MNIST_LABELS)  # the whole draw
    options: dict[str, Any] = {"weight": "int8", "per_channel": True, "calibration": "MinMax",
                               "calibration_images": images, "test_set": str(data_dir),
                               "calibration_draw": draw}  # fmt: skip
    return {
        key: Recipe(name=Path(VARIANT_FILES[str(key)]).stem, activation=activation, **options)
        for key, activation in ACTIVATIONS.items()
    }


def write_bundled_recipes(folder: Path, data_dir: Path, *, seed: int, per_class: int) -> list[Path]:
    """Make each bundled recipe again and write its recipe.json under ``folder/recipes/``.

    Returns:
        The recipe.json files written.

    Raises:
        NotReproducedError: a recipe makes another graph than its variant's.
        QuantcoreError: the folder or the data cannot be read.
    """
    variants = load_model_variants(folder)
    written = []
    for key, recipe in bundled_recipes(data_dir, seed=seed, per_class=per_class).items():
        record = variants.records[key]
        if record.status is not Status.LOADED or record.file is None:
            raise NotReproducedError(f"{key} is not loaded in {folder}: {record.error}")
        result = make_recipe(variants, recipe)
        target = folder / RECIPES_DIR / recipe.name / MANIFEST_NAME
        made_by = VariantRecipe(key, target.relative_to(folder).as_posix(), recipe, result.manifest)
        if not made_by.reproduced_by(result.model, variants):
            raise NotReproducedError(f"recipe {recipe.name} does not make {record.file}'s graph")
        variant: dict[str, Any] = {"key": str(key), "file": record.file, "sha256": record.sha256,
                                   "bytes": record.bytes, "note": METADATA_NOTE}  # fmt: skip
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps({**result.manifest, "variant": variant}, indent=2) + "\n")
        log.info("%s: %s makes %s's graph again", target.relative_to(folder), recipe.name, record.file)
        written.append(target)
    return written


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, metavar="DIR", help="variant folder (%(default)s)")
    parser.add_argument("--fashion-mnist", type=Path, default=datasets.FASHION_MNIST_DIR, metavar="DIR",
                        help="the Fashion-MNIST folder the build read (%(default)s)")  # fmt: skip
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    card = json.loads((args.out / CARD_NAME).read_text())
    try:
        write_bundled_recipes(args.out, args.fashion_mnist, seed=card["seed"],
                              per_class=card["calibration"]["per_class"])  # fmt: skip
    except QuantcoreError as exc:
        log.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
