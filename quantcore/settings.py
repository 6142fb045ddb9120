"""Configuration read from the environment once, at import.

Public functions take keyword-only arguments that default to ``current()``;
the app overrides values from its command-line flags with ``configure()``.

| variable                      | default              | meaning                                  |
|-------------------------------|----------------------|------------------------------------------|
| QP_MODELS_DIR                 | ``<project>/models`` | local models root (trusted)              |
| QP_CACHE_SIZE                 | 8                    | folders kept loaded (LRU)                |
| QP_MAX_MODEL_MB               | 512                  | largest model file opened                |
| QP_TRUST_REMOTE_MODELS        | 0                    | let Hub TorchScript/pickles load (runs code) |
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
TRUST_REMOTE_ENV = "QP_TRUST_REMOTE_MODELS"


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Settings:
    models_root: Path
    cache_size: int = 8
    max_model_bytes: int = 512 * 1024 * 1024
    trust_remote_models: bool = False


def _from_environment() -> Settings:
    return Settings(
        models_root=Path(os.environ.get("QP_MODELS_DIR", PROJECT_ROOT / "models")).resolve(),
        cache_size=max(1, int(os.environ.get("QP_CACHE_SIZE", "8"))),
        max_model_bytes=int(float(os.environ.get("QP_MAX_MODEL_MB", "512")) * 1024 * 1024),
        trust_remote_models=_env_flag(TRUST_REMOTE_ENV),
    )


_settings = _from_environment()


def current() -> Settings:
    """The settings in force."""
    return _settings


def configure(**overrides: object) -> Settings:
    """Replace some settings for this process (e.g. from command-line flags)."""
    global _settings
    if "models_root" in overrides:
        overrides["models_root"] = Path(str(overrides["models_root"])).resolve()
    _settings = replace(_settings, **overrides)  # type: ignore[arg-type]
    return _settings
