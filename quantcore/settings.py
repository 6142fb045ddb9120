"""Configuration read from the environment once, at import.

Public functions take keyword-only arguments that default to ``current()``;
the app overrides values from its command-line flags with ``configure()``.

| variable                      | default                  | meaning                                      |
|-------------------------------|--------------------------|----------------------------------------------|
| QP_MODELS_DIR                 | ``<project>/models``     | local models root (trusted)                  |
| QP_DATA_DIRS                  | ``/usr/share/datasets``  | extra roots test sets may be read from (``:``-separated) |
| QP_CACHE_SIZE                 | 8                        | folders kept loaded (LRU)                    |
| QP_MAX_MODEL_MB               | 512                      | largest model file opened                    |
| QP_TRUST_REMOTE_MODELS        | 0                        | let Hub TorchScript/pickles load (runs code) |
| QP_THREADS                    | 2                        | intra-op threads of every model run          |
| QP_EVAL_BATCH_SIZE            | 250                      | images per call when scoring a sample set    |
| QP_MAX_IMAGE_PIXELS           | 40000000                 | largest image decoded (width x height)       |
| QP_MAX_IMAGE_MB               | 20                       | largest image file read                      |
| QP_MAX_ACTIVATION_MB          | 512                      | captured activations of one per-layer batch  |
| QP_MAX_RUN_IMAGES             | 4096                     | most images one per-layer run may take       |
| QP_MAX_SAMPLES_MB             | 64                       | a samples.npz's arrays, once decompressed    |
| QP_MAX_DATASET_MB             | 256                      | a test-set file, once decompressed and read  |
| QP_MAX_UPLOAD_MB              | 20                       | largest file a visitor may upload            |
| QP_MAX_UPLOAD_TOTAL_MB        | 64                       | most bytes of one session's uploaded files   |
| QP_MAX_UPLOADS                | 16                       | uploaded folders kept at once (all sessions) |
| QP_UPLOAD_TTL_S               | 3600                     | an unused uploaded folder is removed after   |
| QP_UPLOADS_DIR                | ``<project>/uploads``    | where sessions' uploaded folders live        |
| QP_HUB_MAX_FILES              | 32                       | most files one Hub pull takes from a folder  |
| QP_HUB_MAX_TOTAL_MB           | 1024                     | most bytes one Hub pull downloads            |
| QP_HUB_PULL_TIMEOUT_S         | 300                      | longest one Hub pull may take (all requests) |
| QP_HUB_MIN_RATE_KBPS          | 64                       | slowest Hub transfer kept (per 5 s window)   |
| QP_RAY_ADDRESS                | unset                    | run sensitivity sweeps on this Ray cluster   |
| QP_SWEEP_WORKERS              | 0 (one per core)         | local sweep processes (one ORT thread each)  |
| QP_RUN_TIMEOUT_S              | 60                       | longest a request may run models (cancelled) |
| QP_WARMUP                     | 1                        | warm torch/onnxruntime once the page serves  |
| QP_HEAVY_SLOTS                | 1                        | heavy views (runs over many images) at once  |
| QP_HEAVY_PER_USER             | 3                        | heavy runs one user may have running/waiting |
| QP_HEAVY_WAIT_S               | 600                      | longest a heavy run waits for its slot       |
| QP_CACHE_MB                   | 2048                     | loaded folders kept, by their model files' bytes (LRU) |
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
TRUST_REMOTE_ENV = "QP_TRUST_REMOTE_MODELS"
MB = 1024 * 1024
# Debian installs its data set packages (dataset-fashion-mnist) here.
DEFAULT_DATA_DIRS = (Path("/usr/share/datasets"),)


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def _env_int(name: str, default: int, *, minimum: int = 1) -> int:
    return max(minimum, int(os.environ.get(name, str(default))))


def _env_float(name: str, default: float) -> float:
    return max(0.0, float(os.environ.get(name, str(default))))


def _env_bytes(name: str, default_mb: float) -> int:
    return int(float(os.environ.get(name, str(default_mb))) * MB)


def _env_paths(name: str, default: tuple[Path, ...]) -> tuple[Path, ...]:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return tuple(Path(p).resolve() for p in raw.split(os.pathsep) if p.strip())


@dataclass(frozen=True)
class Settings:
    models_root: Path
    data_dirs: tuple[Path, ...] = DEFAULT_DATA_DIRS
    cache_size: int = 8
    max_model_bytes: int = 512 * MB
    trust_remote_models: bool = False
    threads: int = 2
    eval_batch_size: int = 250
    max_image_pixels: int = 40_000_000
    max_image_bytes: int = 20 * MB
    max_activation_bytes: int = 512 * MB
    max_run_images: int = 4096
    max_samples_bytes: int = 64 * MB
    max_dataset_bytes: int = 256 * MB
    max_upload_bytes: int = 20 * MB
    max_upload_total_bytes: int = 64 * MB
    max_uploads: int = 16
    upload_ttl_s: float = 3600.0
    uploads_root: Path = PROJECT_ROOT / "uploads"
    hub_max_files: int = 32
    hub_max_total_bytes: int = 1024 * MB
    hub_pull_timeout_s: float = 300.0
    hub_min_rate_bytes_s: float = 64 * 1024.0
    run_timeout_s: float = 60.0
    ray_address: str | None = None
    sweep_workers: int = 0  # 0: one per core
    warmup: bool = True
    heavy_slots: int = 1
    heavy_per_user: int = 3
    heavy_wait_s: float = 600.0
    cache_bytes: int = 2048 * MB

    @property
    def data_roots(self) -> tuple[Path, ...]:
        """Where a test set may be read from: the models root and the data dirs."""
        return (self.models_root, *self.data_dirs)


def _from_environment() -> Settings:
    return Settings(
        models_root=Path(os.environ.get("QP_MODELS_DIR", PROJECT_ROOT / "models")).resolve(),
        data_dirs=_env_paths("QP_DATA_DIRS", DEFAULT_DATA_DIRS),
        cache_size=_env_int("QP_CACHE_SIZE", 8),
        max_model_bytes=_env_bytes("QP_MAX_MODEL_MB", 512),
        trust_remote_models=_env_flag(TRUST_REMOTE_ENV),
        threads=_env_int("QP_THREADS", 2),
        eval_batch_size=_env_int("QP_EVAL_BATCH_SIZE", 250),
        max_image_pixels=_env_int("QP_MAX_IMAGE_PIXELS", 40_000_000),
        max_image_bytes=_env_bytes("QP_MAX_IMAGE_MB", 20),
        max_activation_bytes=_env_bytes("QP_MAX_ACTIVATION_MB", 512),
        max_run_images=_env_int("QP_MAX_RUN_IMAGES", 4096),
        max_samples_bytes=_env_bytes("QP_MAX_SAMPLES_MB", 64),
        max_dataset_bytes=_env_bytes("QP_MAX_DATASET_MB", 256),
        max_upload_bytes=_env_bytes("QP_MAX_UPLOAD_MB", 20),
        max_upload_total_bytes=_env_bytes("QP_MAX_UPLOAD_TOTAL_MB", 64),
        max_uploads=_env_int("QP_MAX_UPLOADS", 16),
        upload_ttl_s=_env_float("QP_UPLOAD_TTL_S", 3600.0),
        uploads_root=Path(os.environ.get("QP_UPLOADS_DIR", PROJECT_ROOT / "uploads")).resolve(),
        hub_max_files=_env_int("QP_HUB_MAX_FILES", 32),
        hub_max_total_bytes=_env_bytes("QP_HUB_MAX_TOTAL_MB", 1024),
        hub_pull_timeout_s=_env_float("QP_HUB_PULL_TIMEOUT_S", 300.0),
        hub_min_rate_bytes_s=_env_float("QP_HUB_MIN_RATE_KBPS", 64.0) * 1024,
        # A limit of 0 would cancel every run: the smallest usable one is a fraction of a second.
        run_timeout_s=max(0.05, _env_float("QP_RUN_TIMEOUT_S", 60.0)),
        ray_address=os.environ.get("QP_RAY_ADDRESS") or None,
        sweep_workers=_env_int("QP_SWEEP_WORKERS", 0),
        warmup=_env_int("QP_WARMUP", 1, minimum=0) != 0,
        heavy_slots=_env_int("QP_HEAVY_SLOTS", 1),
        heavy_per_user=_env_int("QP_HEAVY_PER_USER", 3),
        heavy_wait_s=_env_float("QP_HEAVY_WAIT_S", 600.0),
        cache_bytes=_env_bytes("QP_CACHE_MB", 2048),
    )


_settings = _from_environment()


def current() -> Settings:
    """The settings in force."""
    return _settings


def configure(**overrides: object) -> Settings:
    """Replace some settings for this process (e.g. from command-line flags)."""
    global _settings
    for name in ("models_root", "uploads_root"):
        if name in overrides:
            overrides[name] = Path(str(overrides[name])).resolve()
    _settings = replace(_settings, **overrides)  # type: ignore[arg-type]
    return _settings
