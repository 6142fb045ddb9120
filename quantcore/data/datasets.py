"""Labelled image sets the bundled models are trained and measured on.

Every reader returns ``LabelledImages``: uint8 images already shaped for
ResNet8 (N, 3, 32, 32), int64 labels and the class names. ``preprocess`` turns
those pixels into the model input, and ``PREPROCESSING`` describes the same
transform in plain data so model files and cards can carry it.

Sources: Fashion-MNIST as gzipped IDX (Debian's ``dataset-fashion-mnist``),
CIFAR-10 as a ``cifar-10-batches-py`` folder, and ``samples.npz`` — the
stratified test subset shipped beside the bundled model.
"""

from __future__ import annotations

import codecs
import gzip
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from quantcore.errors import DatasetError

Split = Literal["train", "test"]

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_LABELS: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
_FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
_CIFAR10_FILES = {
    "train": tuple(f"data_batch_{i}" for i in range(1, 6)),
    "test": ("test_batch",),
}

IMAGE_SHAPE = (3, 32, 32)
# The model input, described as data: stored in ONNX metadata, checkpoints and cards.
PREPROCESSING: dict[str, Any] = {
    "input_name": "input",
    "layout": "NCHW",
    "shape": [3, 32, 32],
    "dtype": "float32",
    "formula": "x = uint8_pixels / 255",
    "range": [0.0, 1.0],
    "mean": None,
    "std": None,
}


@dataclass(frozen=True)
class LabelledImages:
    """Images as uint8 (N, H, W), (N, H, W, C) or (N, C, H, W) — or float arrays (N, ...) for a model taking
    no images — labels as int64 (N,), and the class names."""

    images: np.ndarray
    labels: np.ndarray
    label_names: tuple[str, ...]

    def __post_init__(self) -> None:
        kind = self.images.dtype
        if not (kind == np.uint8 and self.images.ndim in (3, 4)) and not (
            kind in (np.float32, np.float64) and self.images.ndim >= 2
        ):
            raise DatasetError(
                f"samples must be uint8 images (N, H, W[, C]) or float arrays (N, ...), got {kind} {self.images.shape}"
            )
        if self.labels.shape != (len(self.images),):
            raise DatasetError(f"{len(self.labels)} labels for {len(self.images)} images")
        if len(self.labels) and not 0 <= int(self.labels.min()) <= int(self.labels.max()) < len(self.label_names):
            raise DatasetError(f"labels fall outside the {len(self.label_names)} class names")

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, indices: np.ndarray) -> LabelledImages:
        """The images at ``indices``, in that order."""
        return LabelledImages(self.images[indices], self.labels[indices], self.label_names)


def preprocess(images: np.ndarray) -> np.ndarray:
    """Model input for uint8 images (N, 3, 32, 32): float32 in [0, 1], as ``PREPROCESSING`` says."""
    return np.asarray(images, dtype=np.float32) / np.float32(255.0)


def grey_to_rgb32(images: np.ndarray) -> np.ndarray:
    """28x28 grey uint8 images (N, 28, 28) -> (N, 3, 32, 32): zero-pad 2 px, repeat to 3 channels."""
    padded = np.pad(images, ((0, 0), (2, 2), (2, 2)))
    return np.ascontiguousarray(np.repeat(padded[:, None], 3, axis=1))


def read_idx_gz(path: Path) -> np.ndarray:
    """A gzipped IDX file (the MNIST family's format) as a uint8 array of the shape it declares.

    Raises:
        DatasetError: the file is missing, not gzip, or not unsigned-byte IDX of consistent size.
    """
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as exc:
        raise DatasetError(f"cannot read IDX file {path}: {exc}") from exc
    # Header: two zero bytes, type code 0x08 (unsigned byte), number of dimensions, then big-endian sizes.
    if len(raw) < 4 or raw[:3] != b"\x00\x00\x08":
        raise DatasetError(f"{path} is not an unsigned-byte IDX file")
    ndim = raw[3]
    header_end = 4 + 4 * ndim
    shape = tuple(int(d) for d in np.frombuffer(raw[4:header_end], dtype=">u4"))
    if len(raw) - header_end != int(np.prod(shape)):
        raise DatasetError(f"{path}: header says {shape} but holds {len(raw) - header_end} bytes")
    return np.frombuffer(raw, dtype=np.uint8, offset=header_end).reshape(shape)


def load_fashion_mnist(split: Split, root: Path = FASHION_MNIST_DIR, *, as_stored: bool = False) -> LabelledImages:
    """One split of Fashion-MNIST from gzipped IDX files, padded to 32x32 and made 3-channel
    (``as_stored``: the 28x28 grey images as they are, for fitting to any model).

    Raises:
        DatasetError: a file is missing or malformed, or images and labels disagree.
    """
    image_file, label_file = _FASHION_MNIST_FILES[split]
    images = read_idx_gz(Path(root) / image_file)
    labels = read_idx_gz(Path(root) / label_file)
    if images.ndim != 3 or images.shape[1:] != (28, 28) or labels.ndim != 1:
        raise DatasetError(
            f"{root}: expected (N, 28, 28) images and (N,) labels, got {images.shape} and {labels.shape}"
        )
    shaped = images[:, None] if as_stored else grey_to_rgb32(images)
    return LabelledImages(shaped, labels.astype(np.int64), FASHION_MNIST_LABELS)


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
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}") from None


def _read_cifar_pickle(path: Path) -> dict[Any, Any]:
    try:
        with open(path, "rb") as f:
            content = _ArrayOnlyUnpickler(f, encoding="bytes").load()
    except OSError as exc:
        raise DatasetError(f"cannot read CIFAR-10 file {path}: {exc}") from exc
    except Exception as exc:  # a hostile or corrupt pickle can raise almost anything
        raise DatasetError(f"{path} is not a CIFAR-10 python batch: {exc}") from exc
    if not isinstance(content, dict):
        raise DatasetError(f"{path} is not a CIFAR-10 python batch (holds {type(content).__name__})")
    return content


def _text(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def load_cifar10(folder: Path, split: Split) -> LabelledImages:
    """One split of CIFAR-10 from a standard ``cifar-10-batches-py`` folder.

    The batch files are pickles; they are read with an unpickler that only
    rebuilds numpy arrays and plain containers, never arbitrary classes.

    Raises:
        DatasetError: a file is missing, refused by the unpickler, or malformed.
    """
    folder = Path(folder)
    meta = _read_cifar_pickle(folder / "batches.meta")
    names = meta.get(b"label_names", meta.get("label_names"))
    if not isinstance(names, list) or not names:
        raise DatasetError(f"{folder / 'batches.meta'} has no label_names")
    images, labels = [], []
    for name in _CIFAR10_FILES[split]:
        batch = _read_cifar_pickle(folder / name)
        data = np.asarray(batch.get(b"data", batch.get("data")))
        batch_labels = np.asarray(batch.get(b"labels", batch.get("labels")))
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 or batch_labels.shape != (len(data),):
            raise DatasetError(f"{folder / name}: expected uint8 data (N, 3072) and N labels")
        images.append(data.reshape(-1, *IMAGE_SHAPE))  # rows are 1024 R, then G, then B values
        labels.append(batch_labels.astype(np.int64))
    return LabelledImages(np.concatenate(images), np.concatenate(labels), tuple(_text(n) for n in names))


def save_samples(path: Path, data: LabelledImages) -> None:
    """Write ``data`` as a compressed ``.npz`` with ``images``, ``labels`` and ``label_names``."""
    np.savez_compressed(path, images=data.images, labels=data.labels, label_names=np.array(data.label_names))


def load_samples(path: Path) -> LabelledImages:
    """Read a ``samples.npz`` written by ``save_samples`` (no pickled objects are allowed).

    Raises:
        DatasetError: the file is missing, not an npz, or lacks one of the three arrays.
    """
    try:
        with np.load(path, allow_pickle=False) as npz:
            return LabelledImages(
                npz["images"], npz["labels"].astype(np.int64), tuple(str(n) for n in npz["label_names"])
            )
    except (OSError, KeyError, ValueError) as exc:
        raise DatasetError(f"cannot read samples file {path}: {exc}") from exc


def stratified_split(labels: np.ndarray, per_class: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Indices of ``per_class`` random items of every class, and of all the others (both sorted).

    Raises:
        DatasetError: a class has fewer than ``per_class`` items.
    """
    chosen = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        if len(members) < per_class:
            raise DatasetError(f"class {int(cls)} has {len(members)} items, fewer than {per_class}")
        chosen.append(rng.choice(members, size=per_class, replace=False))
    picked = np.sort(np.concatenate(chosen)) if chosen else np.empty(0, dtype=np.int64)
    return picked, np.setdiff1d(np.arange(len(labels)), picked)
