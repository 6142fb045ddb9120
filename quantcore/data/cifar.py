"""CIFAR-10 from a standard ``cifar-10-batches-py`` folder, read without trusting its pickles.

The batch files are pickles; a folder handed to us may not be the real thing, so they are read with an
unpickler that only rebuilds numpy arrays and plain containers, never arbitrary classes, and only when
the file is within ``QP_MAX_DATASET_MB``. Files are opened through ``datasets.open_data_file``
(confined to the roots the caller names).
"""

from __future__ import annotations

import codecs
import io
import pickle
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from quantcore import settings
from quantcore.data.datasets import IMAGE_SHAPE, LabelledImages, Roots, Split, open_data_file
from quantcore.errors import DatasetError
from quantcore.sizes import megabytes

CIFAR10_FILES = {
    "train": tuple(f"data_batch_{i}" for i in range(1, 6)),
    "test": ("test_batch",),
}


class _Refused(pickle.UnpicklingError):
    """The unpickler refused a global: the message is ours, naming what the file asked for."""


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, bytes and numpy arrays, and refuses every other global.

    CIFAR-10's python batches are pickles; a folder handed to us may not be the
    real thing, so nothing but array reconstruction may be imported while reading.
    """

    _ALLOWED: ClassVar[dict[tuple[str, str], Any]] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("numpy.core.multiarray", "_reconstruct"): np._core.multiarray._reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): np._core.multiarray._reconstruct,
        ("numpy.core.multiarray", "scalar"): np._core.multiarray.scalar,
        ("numpy._core.multiarray", "scalar"): np._core.multiarray.scalar,
        ("numpy.core.numeric", "_frombuffer"): np._core.numeric._frombuffer,
        ("numpy._core.numeric", "_frombuffer"): np._core.numeric._frombuffer,
        # Python 3 writes bytes as _codecs.encode(str, "latin1") in protocols < 3.
        ("_codecs", "encode"): codecs.encode,
    }

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._ALLOWED[(module, name)]
        except KeyError:
            raise _Refused(f"refusing to load {module}.{name}"[:200]) from None


def _read_cifar_pickle(path: Path, roots: Roots) -> dict[Any, Any]:
    limit = settings.current().max_dataset_bytes
    with open_data_file(path, roots) as f:
        raw = f.read(limit + 1)
    if len(raw) > limit:
        raise DatasetError(f"{path.name} is over the {megabytes(limit)} limit (QP_MAX_DATASET_MB)")
    try:
        content = _ArrayOnlyUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except _Refused as exc:
        raise DatasetError(f"{path.name} is not a CIFAR-10 python batch: {exc}") from None
    except Exception as exc:  # a hostile or corrupt pickle can raise almost anything; its text may quote bytes
        raise DatasetError(f"{path.name} is not a CIFAR-10 python batch ({type(exc).__name__})") from None
    if not isinstance(content, dict):
        raise DatasetError(f"{path.name} is not a CIFAR-10 python batch (holds {type(content).__name__})")
    return content


def _text(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def load_cifar10(folder: Path, split: Split, *, roots: Roots = None) -> LabelledImages:
    """One split of CIFAR-10 from a standard ``cifar-10-batches-py`` folder.

    The batch files are pickles; they are read with an unpickler that only
    rebuilds numpy arrays and plain containers, never arbitrary classes, and
    only when the file is within ``QP_MAX_DATASET_MB``.

    Args:
        folder: the ``cifar-10-batches-py`` folder.
        split: ``"train"`` or ``"test"``.
        roots: folders the files must resolve into (default: ``folder``).

    Raises:
        DatasetError: a file is missing, over the limit, refused by the unpickler, or malformed.
        PathNotAllowedError: a file links outside ``roots``.
    """
    folder = Path(folder)
    roots = roots if roots is not None else [folder]
    meta = _read_cifar_pickle(folder / "batches.meta", roots)
    names = meta.get(b"label_names", meta.get("label_names"))
    if not isinstance(names, list) or not names or len(names) > 10_000:
        raise DatasetError("batches.meta has no label_names")
    images, labels = [], []
    for name in CIFAR10_FILES[split]:
        batch = _read_cifar_pickle(folder / name, roots)
        data = batch.get(b"data", batch.get("data"))
        batch_labels = batch.get(b"labels", batch.get("labels"))
        # An array, and as many labels: never np.asarray over whatever the pickle built (a list of a
        # million references to one array is a few bytes of pickle and gigabytes of array).
        if (
            not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072
            or not (isinstance(batch_labels, list) or (isinstance(batch_labels, np.ndarray) and batch_labels.ndim == 1))
            or len(batch_labels) != len(data)
        ):  # fmt: skip
            raise DatasetError(f"{name}: expected uint8 data (N, 3072) and N labels")
        batch_labels = np.asarray(batch_labels)
        if batch_labels.shape != (len(data),) or not np.issubdtype(batch_labels.dtype, np.integer):
            raise DatasetError(f"{name}: expected uint8 data (N, 3072) and N labels")
        images.append(data.reshape(-1, *IMAGE_SHAPE))  # rows are 1024 R, then G, then B values
        labels.append(batch_labels.astype(np.int64))
    return LabelledImages(np.concatenate(images), np.concatenate(labels), tuple(_text(n) for n in names))
