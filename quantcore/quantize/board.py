"""The recipe board: every recipe of a session scored alike, ranked.

Per recipe: top-1 accuracy and agreement with float on the folder's samples,
the per-layer SQNR against ``onnx_float`` (its worst layer), the output SQNR,
the file size, and images/s at batch 1 and 64. Per-layer numbers come from
the same ``layer_drift`` the Per-layer error tab uses, run on a layer table
cut down to the float model and this recipe (nothing else is run again).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from quantcore import settings
from quantcore.backends import predictor_for
from quantcore.evaluate.batches import sample_inputs
from quantcore.evaluate.inputs import to_model_input, variant_spec
from quantcore.evaluate.speed import measure_throughput
from quantcore.inspect.drift import layer_drift
from quantcore.inspect.layer_table import layer_table
from quantcore.load import ModelVariants, RecipeKey, VariantKey

BOARD_IMAGES = 1000
SPEED_BATCHES = (1, 64)
SPEED_RUNS = 20


@dataclass(frozen=True)
class BoardEntry:
    """One recipe as the board shows it."""

    recipe: str
    images: int
    accuracy: float | None
    agreement: float | None
    worst_layer: str | None
    worst_sqnr_db: float | None
    output_sqnr_db: float | None
    bytes: int
    images_per_second: dict[int, float]
    layer_sqnr_db: tuple[float | None, ...] = ()
    layers: tuple[str, ...] = ()


def score_recipe(
    variants: ModelVariants, key: RecipeKey, *, images: int = BOARD_IMAGES, speed_runs: int = SPEED_RUNS
) -> BoardEntry:
    """Score one recipe variant of ``variants`` (a set holding it, e.g. from ``with_results``).

    Raises:
        KeyError: the recipe is not in the set.
        ValueError: ``images`` is out of range.
    """
    record = variants.records[key]
    full = layer_table(variants)
    keep = (VariantKey.ONNX_FLOAT, key)
    rows = tuple(replace(r, layers={k: v for k, v in r.layers.items() if k in keep}) for r in full.rows
                 if key in r.layers and VariantKey.ONNX_FLOAT in r.layers)  # fmt: skip
    table = replace(full, skeleton=VariantKey.ONNX_FLOAT, variants=keep, rows=rows)
    spec = variant_spec(variants, VariantKey.ONNX_FLOAT)
    inputs, _ = sample_inputs(variants, spec, images=min(images, settings.current().max_run_images))
    report = layer_drift(variants, table=table, inputs=inputs)
    drift = next((d for d in report.variants if d.variant == key), None)
    worst = drift.worst if drift is not None else None
    pixels = inputs.take(0, max(SPEED_BATCHES))[0]
    own = to_model_input(pixels, variant_spec(variants, key))
    predictor = predictor_for(variants.model(key))
    speeds = {b: measure_throughput(predictor, own, batch_size=b, runs=speed_runs, warmup_runs=3).best_images_per_second
              for b in SPEED_BATCHES}  # fmt: skip
    return BoardEntry(
        recipe=str(key), images=inputs.count,
        accuracy=drift.accuracy if drift else None, agreement=drift.agreement if drift else None,
        worst_layer=table.rows[worst].primary.name if worst is not None else None,
        worst_sqnr_db=drift.sqnr_db[worst] if drift is not None and worst is not None else None,
        output_sqnr_db=drift.output_sqnr_db if drift else None, bytes=int(record.bytes or 0),
        images_per_second=speeds, layer_sqnr_db=drift.sqnr_db if drift else (),
        layers=tuple(r.primary.name for r in table.rows),
    )  # fmt: skip


def ranked(entries: list[BoardEntry]) -> list[BoardEntry]:
    """Best first: accuracy, then agreement with float, then output SQNR (missing values last)."""

    def key(e: BoardEntry) -> tuple[float, float, float]:
        def value(v: float | None) -> float:
            return -math.inf if v is None or math.isnan(v) else v

        return (-value(e.accuracy), -value(e.agreement), -value(e.output_sqnr_db))

    return sorted(entries, key=key)
