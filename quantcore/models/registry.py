"""The architectures state_dict checkpoints are rebuilt into, by name.

New architectures join through ``ARCHITECTURES``; a checkpoint names its
architecture with an ``"arch"`` key, or is matched by its state_dict keys.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn

from quantcore.models.resnet8 import build_resnet8


def is_quantized_state_dict(state_dict: Mapping[str, object]) -> bool:
    return any(isinstance(v, torch.Tensor) and v.is_quantized for v in state_dict.values())


def quantize_fx(model: nn.Module, calibration: torch.Tensor, backend: str = "x86") -> nn.Module:
    """Post-training static int8 quantization (torch.ao FX) calibrated on ``calibration``."""
    import warnings

    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    torch.backends.quantized.engine = backend
    with warnings.catch_warnings():  # torch.ao warns it is deprecated; it is what torch 2.13 ships
        warnings.simplefilter("ignore")
        prepared = prepare_fx(model.eval(), get_default_qconfig_mapping(backend), (calibration[:1],))
        with torch.no_grad():
            prepared(calibration)
        return convert_fx(prepared)


# name -> builder of the float module sized to fit a state_dict.
ARCHITECTURES: dict[str, Callable[[Mapping[str, torch.Tensor] | None], nn.Module]] = {
    "resnet8": build_resnet8,
}


def rebuild(state_dict: Mapping[str, torch.Tensor], arch: str | None = None) -> tuple[str, nn.Module]:
    """The first registered architecture (or ``arch``) that takes ``state_dict`` exactly, loaded.

    An int8 state_dict gets an int8 skeleton (FX, x86) of the architecture to load into.

    Raises:
        LookupError: no registered architecture fits.
    """
    candidates = [arch] if arch in ARCHITECTURES else list(ARCHITECTURES)
    for name in candidates:
        try:
            model = ARCHITECTURES[name](state_dict)
            if is_quantized_state_dict(state_dict):
                channels = int(state_dict["conv1.weight"].shape[1])
                model = quantize_fx(model, torch.zeros(2, channels, 32, 32))
            model.load_state_dict(state_dict)
        except (KeyError, IndexError, AttributeError, TypeError, RuntimeError):
            continue
        return name, model
    raise LookupError(f"fits none of: {', '.join(candidates)}")
