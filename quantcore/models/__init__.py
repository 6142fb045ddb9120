"""Model architectures that state_dict checkpoints are rebuilt into (ResNet8 on one screen)."""

from quantcore.models.registry import ARCHITECTURES, rebuild

__all__ = ["ARCHITECTURES", "rebuild"]
