"""A quantization recipe: every choice a user makes, typed, and the ``quantize_static`` arguments it stands for.

Nothing here quantizes: ``Recipe.ort_arguments`` maps each field onto
onnxruntime's own options (``quant_format``, ``activation_type``,
``weight_type``, ``per_channel``, ``reduce_range``, ``calibrate_method``,
``nodes_to_exclude`` and ``extra_options``: ``ActivationSymmetric``,
``WeightSymmetric``, ``CalibPercentile``, ``TensorQuantOverrides``), and
``calibration_options`` picks out the part that decides the calibration
ranges — recipes that share it share one calibration run. ``CalibrationDraw``
names calibration images drawn at random per class from a split of a test-set
folder (how the bundled variants were calibrated), so such a recipe too can be
made again from its ``recipe.json``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from typing import Any

from quantcore.errors import RecipeError


class _Choice(StrEnum):
    @classmethod
    def from_string(cls, text: str) -> Any:
        """The member named ``text`` (case-insensitive).

        Raises:
            RecipeError: no such member.
        """
        for member in cls:
            if member.value.lower() == str(text).strip().lower():
                return member
        raise RecipeError(f"unknown {cls.__doc__}: {text!r}; expected one of {', '.join(m.value for m in cls)}")


class QuantFormatName(_Choice):
    """format"""

    QDQ = "QDQ"
    QOPERATOR = "QOperator"


class ActivationType(_Choice):
    """activation type"""

    INT8 = "int8"
    UINT8 = "uint8"
    INT16 = "int16"
    UINT16 = "uint16"


class WeightType(_Choice):
    """weight type"""

    INT8 = "int8"
    UINT8 = "uint8"
    INT4 = "int4"
    UINT4 = "uint4"


class CalibrationMethodName(_Choice):
    """calibration method"""

    MINMAX = "MinMax"
    ENTROPY = "Entropy"
    PERCENTILE = "Percentile"
    DISTRIBUTION = "Distribution"


QUANT_TYPES = {"int8": "QInt8", "uint8": "QUInt8", "int16": "QInt16", "uint16": "QUInt16",
               "int4": "QInt4", "uint4": "QUInt4"}  # fmt: skip
EIGHT_BIT = {"int8", "uint8"}
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
SPLITS = ("train", "test")
MAX_SEED_WORDS = 8


@dataclass(frozen=True)
class CalibrationDraw:
    """Calibration images drawn from one split of the recipe's test-set folder, ``per_class`` of every class.

    The draw is ``quantcore.data.datasets.stratified_split(labels, per_class, numpy.random.default_rng(seed))``:
    class by class, ``Generator.choice`` without replacement, the picked indices then sorted.

    Attributes:
        split: ``train`` or ``test``.
        per_class: images drawn from every class.
        seed: numpy ``default_rng``'s seed (several ints: a ``SeedSequence``'s entropy).
    """

    split: str = "train"
    per_class: int = 20
    seed: tuple[int, ...] = (0,)

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise RecipeError(f"a calibration draw's split is one of {', '.join(SPLITS)}, got {self.split!r}")
        if isinstance(self.per_class, bool) or not isinstance(self.per_class, int) or not 1 <= self.per_class <= 10_000:
            raise RecipeError(f"a calibration draw's per_class is between 1 and 10000, got {self.per_class!r}")
        seed = self.seed if isinstance(self.seed, (list, tuple)) else (self.seed,)
        if not 1 <= len(seed) <= MAX_SEED_WORDS or not all(
            isinstance(s, int) and not isinstance(s, bool) and 0 <= s < 2**32 for s in seed
        ):
            raise RecipeError(f"a calibration draw's seed is 1 to {MAX_SEED_WORDS} integers in [0, 2**32)")
        object.__setattr__(self, "seed", tuple(seed))

    def as_dict(self) -> dict[str, Any]:
        return {"split": self.split, "per_class": self.per_class, "seed": list(self.seed)}


@dataclass(frozen=True)
class LayerOverride:
    """One layer quantized otherwise than the rest (``TensorQuantOverrides`` on its weight / output tensor)."""

    weight: WeightType | None = None
    activation: ActivationType | None = None

    def as_dict(self) -> dict[str, str]:
        return {k: str(v) for k, v in (("weight", self.weight), ("activation", self.activation)) if v is not None}


@dataclass(frozen=True)
class Recipe:
    """How to quantize a float ONNX model with onnxruntime.

    Attributes:
        name: the recipe variant's name (``recipe:<name>``); made from the options when empty.
        format, activation, weight, per_channel, reduce_range: as ``quantize_static`` takes them.
        symmetric_activations: ``ActivationSymmetric``.
        symmetric_weights: ``WeightSymmetric``; None: onnxruntime's default (symmetric for signed types).
        calibration, percentile: the calibration method (``CalibPercentile`` for Percentile).
        calibration_images: how many images calibrate.
        test_set: calibrate on this test-set folder's images instead of the folder's samples.
        exclude: layers kept in float (layer names as the layer table shows them, or ONNX node names).
        only: quantize only these layers (``nodes_to_quantize``); empty: every layer.
        overrides: per-layer weight / activation types (``TensorQuantOverrides``).
    """

    name: str = ""
    format: QuantFormatName = QuantFormatName.QDQ
    activation: ActivationType = ActivationType.UINT8
    weight: WeightType = WeightType.INT8
    per_channel: bool = True
    reduce_range: bool = False
    symmetric_activations: bool = False
    symmetric_weights: bool | None = None
    calibration: CalibrationMethodName = CalibrationMethodName.MINMAX
    percentile: float = 99.999
    calibration_images: int = 200
    test_set: str | None = None
    calibration_draw: CalibrationDraw | None = None
    exclude: tuple[str, ...] = ()
    only: tuple[str, ...] = ()
    overrides: Mapping[str, LayerOverride] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, kind in (("format", QuantFormatName), ("activation", ActivationType), ("weight", WeightType),
                           ("calibration", CalibrationMethodName)):  # fmt: skip
            value = getattr(self, name)
            if not isinstance(value, kind):
                object.__setattr__(self, name, kind.from_string(value))
        exclude = (str(e).strip() for e in self.exclude)
        object.__setattr__(self, "exclude", tuple(dict.fromkeys(e for e in exclude if e)))
        object.__setattr__(self, "only", tuple(dict.fromkeys(str(e).strip() for e in self.only if str(e).strip())))
        object.__setattr__(self, "overrides", {str(k): _override(v) for k, v in dict(self.overrides).items()})
        if self.calibration_draw is not None and not isinstance(self.calibration_draw, CalibrationDraw):
            object.__setattr__(self, "calibration_draw", _draw(self.calibration_draw))
        self.validate()
        if not self.name:
            object.__setattr__(self, "name", self.default_name())

    def validate(self) -> None:
        """Refuse what onnxruntime refuses, before any work.

        Raises:
            RecipeError: the combination cannot be made.
        """
        if self.name and not NAME_PATTERN.match(self.name):
            raise RecipeError(f"recipe name {self.name!r}: letters, digits, '.', '_' and '-' only, 64 at most")
        types = {str(self.activation), str(self.weight)}
        types |= {str(t) for o in self.overrides.values() for t in (o.weight, o.activation) if t is not None}
        if self.format is QuantFormatName.QOPERATOR and not types <= EIGHT_BIT:
            raise RecipeError("QOperator takes 8-bit types only (int8/uint8); use QDQ for 16-bit or 4-bit")
        if self.activation is ActivationType.INT8 and self.weight is WeightType.UINT8:
            raise RecipeError("onnxruntime does not quantize int8 activations with uint8 weights")
        if self.calibration is CalibrationMethodName.PERCENTILE and not 0 < self.percentile <= 100:
            raise RecipeError(f"percentile must be in (0, 100], got {self.percentile}")
        if not 1 <= self.calibration_images <= 100_000:
            raise RecipeError(f"calibration images must be between 1 and 100000, got {self.calibration_images}")
        if self.calibration_draw is not None and not self.test_set:
            raise RecipeError("a calibration draw picks images from a test set folder: name the test set")

    def default_name(self) -> str:
        """``u8s8-minmax-pc``-style: activation and weight letters and bits, method, per-channel, the extras."""

        def short(t: str) -> str:
            return ("u" if t.startswith("u") else "s") + t.removeprefix("u").removeprefix("int")

        parts = [f"{short(str(self.activation))}{short(str(self.weight))}", str(self.calibration).lower()]
        if self.calibration is CalibrationMethodName.PERCENTILE:
            parts[-1] += f"{self.percentile:g}"
        parts.append("pc" if self.per_channel else "pt")
        if self.format is QuantFormatName.QOPERATOR:
            parts.append("qop")
        if self.reduce_range:
            parts.append("rr")
        if self.symmetric_activations:
            parts.append("syma")
        if self.symmetric_weights is not None:
            parts.append("symw" if self.symmetric_weights else "asymw")
        if self.exclude:
            parts.append(f"float{len(self.exclude)}")
        if self.only:
            parts.append(f"only{len(self.only)}")
        if self.overrides:
            parts.append(f"ovr{len(self.overrides)}")
        if self.test_set:
            parts.append("testset")
        if self.calibration_draw is not None:
            parts.append(f"{self.calibration_draw.split}{self.calibration_draw.per_class}")
        return "-".join(parts)

    def renamed(self, name: str) -> Recipe:
        return replace(self, name=name)

    def calibration_options(self) -> dict[str, Any]:
        """The options that decide the calibration ranges (and nothing else): the calibration cache's key part."""
        options: dict[str, Any] = {"method": str(self.calibration)}
        if self.calibration is CalibrationMethodName.PERCENTILE:
            options["CalibPercentile"] = float(self.percentile)
        return options

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready; ``Recipe.from_dict`` reads it back."""
        data = asdict(self)
        data.update(format=str(self.format), activation=str(self.activation), weight=str(self.weight),
                    calibration=str(self.calibration), exclude=list(self.exclude), only=list(self.only),
                    calibration_draw=self.calibration_draw.as_dict() if self.calibration_draw else None,
                    overrides={k: v.as_dict() for k, v in self.overrides.items()})  # fmt: skip
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Recipe:
        """A recipe from ``as_dict``'s form (unknown keys refused).

        Raises:
            RecipeError: unknown keys or values.
        """
        if not isinstance(data, Mapping):
            raise RecipeError("a recipe is an object of options")
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise RecipeError(f"unknown recipe options: {', '.join(sorted(map(str, unknown)))}")
        values = dict(data)
        for name in ("exclude", "only"):
            if name in values:
                if isinstance(values[name], str) or not isinstance(values[name], (list, tuple)):
                    raise RecipeError(f"{name} is a list of layer names")
                values[name] = tuple(values[name])
        if "overrides" in values and not isinstance(values["overrides"], Mapping):
            raise RecipeError("overrides map a layer name to {'weight': type, 'activation': type}")
        for name in ("per_channel", "reduce_range", "symmetric_activations"):
            if name in values and not isinstance(values[name], bool):
                raise RecipeError(f"{name} is true or false")
        try:
            if "percentile" in values:
                values["percentile"] = float(values["percentile"])
            if "calibration_images" in values:
                values["calibration_images"] = int(values["calibration_images"])
        except (TypeError, ValueError):
            raise RecipeError("percentile and calibration_images are numbers") from None
        return cls(**values)


def _draw(value: Any) -> CalibrationDraw:
    if not isinstance(value, Mapping) or not set(value) <= {"split", "per_class", "seed"}:
        raise RecipeError("a calibration draw is {'split': 'train'|'test', 'per_class': n, 'seed': [ints]}")
    return CalibrationDraw(**value)


def _override(value: Any) -> LayerOverride:
    if isinstance(value, LayerOverride):
        return value
    if not isinstance(value, Mapping) or not set(value) <= {"weight", "activation"} or not value:
        raise RecipeError("a layer override is {'weight': type} and/or {'activation': type}")
    weight, activation = value.get("weight"), value.get("activation")
    return LayerOverride(WeightType.from_string(weight) if weight else None,
                         ActivationType.from_string(activation) if activation else None)  # fmt: skip


def quant_type(name: str) -> Any:
    """onnxruntime's ``QuantType`` for ``int8``, ``uint4``..."""
    from onnxruntime.quantization import QuantType

    return getattr(QuantType, QUANT_TYPES[name])
