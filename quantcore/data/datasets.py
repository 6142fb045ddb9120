"""Labelled image sets the bundled models are trained and measured on.

Every reader returns ``LabelledImages``: uint8 images already shaped for
ResNet8 (N, 3, 32, 32), int64 labels and the class names. ``preprocess`` turns
those pixels into the model input, and ``PREPROCESSING`` describes the same
transform in plain data so model files and cards can carry it.

Sources: Fashion-MNIST as gzipped IDX (Debian's ``dataset-fashion-mnist``),
CIFAR-10 as a ``cifar-10-batches-py`` folder (``quantcore.data.cifar``), and
``samples.npz`` — the stratified test subset shipped beside the bundled model.

Every file is opened through ``paths.open_within``: it must resolve inside the
roots the caller names (by default the folder it is in), so a link to a file
elsewhere is refused before it is opened. Sizes are checked before anything
is decompressed: an IDX file by the shape its header declares, a ``.npz`` by
its members' declared sizes and each array's ``.npy`` header, a CIFAR-10 batch
by its size on disk (``QP_MAX_DATASET_MB``, ``QP_MAX_SAMPLES_MB``). No error
message quotes a file's bytes.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal

import numpy as np

from quantcore import paths, settings
from quantcore.archives import measure_zip
from quantcore.errors import DatasetError, ModelNotFoundError
from quantcore.sizes import megabytes

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
FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}

IMAGE_SHAPE = (3, 32, 32)
SAMPLE_ARRAYS = ("images", "labels", "label_names")
NPZ_MAX_MEMBERS = 16  # a samples.npz holds three
NPY_MAX_HEADER = 10_000  # numpy's own default bound on a .npy header
Roots = Sequence[Path] | None
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


def open_data_file(path: Path, roots: Roots) -> BinaryIO:
    """``path`` opened for reading if it resolves inside ``roots`` (default: the folder it is in).

    Raises:
        PathNotAllowedError: it links outside ``roots``.
        DatasetError: missing, unreadable or not a regular file.
    """
    path = Path(path)
    try:
        return paths.open_within(path, roots if roots is not None else [path.parent], what=path.name)
    except ModelNotFoundError as exc:
        raise DatasetError(f"cannot read {exc}") from None


def read_idx_gz(path: Path, *, roots: Roots = None, max_bytes: int | None = None, grow: float = 1.0) -> np.ndarray:
    """A gzipped IDX file (the MNIST family's format) as a uint8 array of the shape it declares.

    The header is read first; the body is decompressed only if the declared
    shape is within ``max_bytes`` — and exactly that many bytes of it.

    Args:
        path: the ``.gz`` file.
        roots: folders it must resolve into (default: its own folder).
        max_bytes: most bytes the data may take (default: ``QP_MAX_DATASET_MB``).
        grow: how many times larger the caller makes it (the limit applies to that).

    Raises:
        DatasetError: not gzip, not unsigned-byte IDX of consistent size, or over the limit.
        PathNotAllowedError, ModelNotFoundError: as ``paths.open_within``.
    """
    limit = settings.current().max_dataset_bytes if max_bytes is None else max_bytes
    name = Path(path).name
    with open_data_file(path, roots) as raw:
        try:
            with gzip.GzipFile(fileobj=raw, mode="rb") as f:
                # Header: two zero bytes, type code 0x08 (unsigned byte), number of dimensions, then big-endian sizes.
                head = f.read(4)
                if len(head) < 4 or head[:3] != b"\x00\x00\x08" or not 1 <= head[3] <= 4:
                    raise DatasetError(f"{name} is not an unsigned-byte IDX file")
                dims = f.read(4 * head[3])
                if len(dims) < 4 * head[3]:
                    raise DatasetError(f"{name} is not an unsigned-byte IDX file (its header is cut short)")
                shape = struct.unpack(f">{head[3]}I", dims)
                size = math.prod(shape)
                if size * grow > limit:
                    raise DatasetError(
                        f"{name} declares {shape}: {megabytes(size * grow)} once read, over the "
                        f"{megabytes(limit)} limit (QP_MAX_DATASET_MB); nothing of it was decompressed"
                    )
                body = f.read(size)
                if len(body) != size or f.read(1):
                    raise DatasetError(f"{name}: header says {shape} but the file holds a different amount of data")
        except gzip.BadGzipFile:  # its message quotes the file's first bytes
            raise DatasetError(f"{name} is not a gzip file") from None
        except (OSError, EOFError, zlib.error) as exc:
            raise DatasetError(f"cannot read IDX file {name}: {type(exc).__name__}") from None
    return np.frombuffer(body, dtype=np.uint8).reshape(shape)


def load_fashion_mnist(
    split: Split, root: Path = FASHION_MNIST_DIR, *, as_stored: bool = False, roots: Roots = None
) -> LabelledImages:
    """One split of Fashion-MNIST from gzipped IDX files, padded to 32x32 and made 3-channel
    (``as_stored``: the 28x28 grey images as they are, for fitting to any model).

    Args:
        split: ``"train"`` or ``"test"``.
        root: the folder of the IDX files.
        as_stored: keep the images 28x28 grey (N, 1, 28, 28).
        roots: folders the files must resolve into (default: ``root``).

    Raises:
        DatasetError: a file is missing, malformed or over ``QP_MAX_DATASET_MB`` (as the images it
            returns), or images and labels disagree.
        PathNotAllowedError: a file links outside ``roots``.
    """
    image_file, label_file = FASHION_MNIST_FILES[split]
    roots = roots if roots is not None else [Path(root)]
    # 28x28 grey images may become 3x32x32: the limit is on what they become.
    grow = 1.0 if as_stored else math.prod(IMAGE_SHAPE) / (28 * 28)
    images = read_idx_gz(Path(root) / image_file, roots=roots, grow=grow)
    labels = read_idx_gz(Path(root) / label_file, roots=roots, grow=8.0)  # int64 labels
    if images.ndim != 3 or images.shape[1:] != (28, 28) or labels.ndim != 1:
        raise DatasetError(
            f"{root}: expected (N, 28, 28) images and (N,) labels, got {images.shape} and {labels.shape}"
        )
    shaped = images[:, None] if as_stored else grey_to_rgb32(images)
    return LabelledImages(shaped, labels.astype(np.int64), FASHION_MNIST_LABELS)


def save_samples(path: Path, data: LabelledImages) -> None:
    """Write ``data`` as a compressed ``.npz`` with ``images``, ``labels`` and ``label_names``."""
    np.savez_compressed(path, images=data.images, labels=data.labels, label_names=np.array(data.label_names))


def _npy_bytes(handle: BinaryIO, member: str, what: str) -> tuple[int, tuple[int, ...], np.dtype]:
    """The bytes a ``.npy`` member will take once loaded, from its header (nothing else is inflated)."""
    try:
        version = np.lib.format.read_magic(handle)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(handle, max_header_size=NPY_MAX_HEADER)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(handle, max_header_size=NPY_MAX_HEADER)
        else:
            raise DatasetError(f"{what}: {member} is in a .npy format version this reader does not take")
    except DatasetError:
        raise
    except Exception as exc:  # numpy raises ValueError/SyntaxError on bad headers
        raise DatasetError(f"{what}: {member} has no readable .npy header ({type(exc).__name__})") from None
    if dtype.hasobject:
        raise DatasetError(f"{what}: {member} holds Python objects (pickles), which are not loaded")
    return math.prod(shape) * dtype.itemsize, shape, dtype


def load_samples(path: Path, *, roots: Roots = None, max_bytes: int | None = None) -> LabelledImages:
    """Read a ``samples.npz`` written by ``save_samples`` (no pickled objects are allowed).

    Before any array is loaded, the archive's member count and declared sizes,
    then each array's ``.npy`` header (shape x dtype), are checked against
    ``max_bytes``: a few kilobytes claiming a million images are refused unread.

    Args:
        path: the ``.npz`` file.
        roots: folders it must resolve into (default: its own folder).
        max_bytes: most bytes the arrays may take (default: ``QP_MAX_SAMPLES_MB``).

    Raises:
        DatasetError: not an npz, over the limit, or lacking one of the three arrays.
        PathNotAllowedError, ModelNotFoundError: as ``paths.open_within``.
    """
    import zipfile

    limit = settings.current().max_samples_bytes if max_bytes is None else max_bytes
    name = Path(path).name
    with open_data_file(path, roots) as handle:
        # The archive's own records first: how many members, and how much they inflate to.
        measured = measure_zip(handle, max_members=NPZ_MAX_MEMBERS, max_bytes=limit + 64 * 1024, what=name,
                               error=DatasetError, setting="QP_MAX_SAMPLES_MB")  # fmt: skip
        if measured is None:
            raise DatasetError(f"cannot read samples file {name}: not an npz archive")
        missing = [key for key in SAMPLE_ARRAYS if f"{key}.npy" not in measured.sizes]
        if missing:
            raise DatasetError(f"cannot read samples file {name}: it has no {', '.join(missing)}")
        total = 0
        with zipfile.ZipFile(handle) as archive:
            for key in SAMPLE_ARRAYS:
                with archive.open(f"{key}.npy") as member:
                    size, shape, dtype = _npy_bytes(member, f"{key}.npy", name)
                if size > limit - total:
                    raise DatasetError(
                        f"{name}: {key}.npy declares {shape} {dtype}: {megabytes(size)}, over the "
                        f"{megabytes(limit)} limit (QP_MAX_SAMPLES_MB); nothing of it was loaded"
                    )
                total += size
        handle.seek(0)
        try:
            with np.load(handle, allow_pickle=False) as npz:
                return LabelledImages(
                    npz["images"], npz["labels"].astype(np.int64), tuple(str(n) for n in npz["label_names"])
                )
        except DatasetError:
            raise
        except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise DatasetError(f"cannot read samples file {name}: {type(exc).__name__}") from None


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
