"""Readers for Fashion-MNIST IDX, CIFAR-10 python batches and samples.npz, on tiny files written here."""

from __future__ import annotations

import gzip
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from quantcore.data import cifar, datasets
from quantcore.data.datasets import LabelledImages
from quantcore.errors import DatasetError


def write_idx_gz(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + np.array(array.shape, dtype=">u4").tobytes()
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def write_fashion_mnist(folder: Path, n: int = 20) -> np.ndarray:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = np.arange(n) % 10
    for image_file, label_file in datasets.FASHION_MNIST_FILES.values():
        write_idx_gz(folder / image_file, images)
        write_idx_gz(folder / label_file, labels)
    return images


def write_cifar10(folder: Path, per_batch: int = 10, protocol: int = 2) -> None:
    """A cifar-10-batches-py folder in the real format: pickled dicts with bytes keys."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": names, b"num_cases_per_batch": per_batch, b"num_vis": 3072}, f, protocol)
    for name in [*cifar.CIFAR10_FILES["train"], *cifar.CIFAR10_FILES["test"]]:
        batch = {
            b"batch_label": name.encode(),
            b"labels": [i % 10 for i in range(per_batch)],
            b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
            b"filenames": [f"{i}.png".encode() for i in range(per_batch)],
        }
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f, protocol)


def test_read_idx_gz_returns_the_declared_shape(tmp_path: Path) -> None:
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    write_idx_gz(tmp_path / "a.gz", array)
    np.testing.assert_array_equal(datasets.read_idx_gz(tmp_path / "a.gz"), array)


WRONG_TYPE = b"\x00\x00\x0d\x01\x00\x00\x00\x01\x00"  # 0x0d: float, not unsigned byte
TOO_SHORT = b"\x00\x00\x08\x01\x00\x00\x00\x05ab"  # declares 5 bytes, holds 2


@pytest.mark.parametrize("content", [WRONG_TYPE, TOO_SHORT, b""])
def test_read_idx_gz_rejects_wrong_type_or_size(tmp_path: Path, content: bytes) -> None:
    with gzip.open(tmp_path / "bad.gz", "wb") as f:
        f.write(content)
    with pytest.raises(DatasetError):
        datasets.read_idx_gz(tmp_path / "bad.gz")


def test_read_idx_gz_rejects_missing_and_non_gzip_files(tmp_path: Path) -> None:
    with pytest.raises(DatasetError):
        datasets.read_idx_gz(tmp_path / "absent.gz")
    (tmp_path / "plain.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DatasetError):
        datasets.read_idx_gz(tmp_path / "plain.gz")


def test_load_fashion_mnist_pads_to_32_and_repeats_grey(tmp_path: Path) -> None:
    grey = write_fashion_mnist(tmp_path)
    data = datasets.load_fashion_mnist("test", tmp_path)
    assert data.images.shape == (20, 3, 32, 32) and data.images.dtype == np.uint8
    assert data.labels.dtype == np.int64 and data.label_names == datasets.FASHION_MNIST_LABELS
    np.testing.assert_array_equal(data.images[:, 1, 2:30, 2:30], grey)
    np.testing.assert_array_equal(data.images[:, 0], data.images[:, 2])
    assert not data.images[:, :, :2].any() and not data.images[:, :, :, 30:].any()


def test_load_fashion_mnist_names_a_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="train-images"):
        datasets.load_fashion_mnist("train", tmp_path)


@pytest.mark.skipif(not datasets.FASHION_MNIST_DIR.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_debian_fashion_mnist_test_split_is_balanced() -> None:
    data = datasets.load_fashion_mnist("test")
    assert data.images.shape == (10_000, 3, 32, 32)
    assert np.bincount(data.labels).tolist() == [1000] * 10


@pytest.mark.parametrize("protocol", [2, 5])
def test_load_cifar10_reads_the_python_batches(tmp_path: Path, protocol: int) -> None:
    write_cifar10(tmp_path, per_batch=10, protocol=protocol)
    train, test = cifar.load_cifar10(tmp_path, "train"), cifar.load_cifar10(tmp_path, "test")
    assert (len(train), len(test)) == (50, 10)
    assert train.label_names[0] == "airplane" and train.label_names[-1] == "truck"
    with open(tmp_path / "test_batch", "rb") as f:
        raw = pickle.load(f)[b"data"]
    # Row layout: 1024 red values, then green, then blue, each row-major.
    np.testing.assert_array_equal(test.images[3, 1].ravel(), raw[3, 1024:2048])


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.mkdir, (str(self.marker),))


def test_load_cifar10_refuses_a_pickle_that_would_run_code(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    marker = tmp_path / "pwned"
    with open(tmp_path / "test_batch", "wb") as f:
        pickle.dump({b"data": _RunsCode(marker), b"labels": [0]}, f)
    with pytest.raises(DatasetError, match="refusing to load"):
        cifar.load_cifar10(tmp_path, "test")
    assert not marker.exists()


def test_load_cifar10_rejects_wrong_shapes_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(DatasetError):
        cifar.load_cifar10(tmp_path, "train")
    write_cifar10(tmp_path)
    with open(tmp_path / "test_batch", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, f)
    with pytest.raises(DatasetError, match="3072"):
        cifar.load_cifar10(tmp_path, "test")


def _tiny(n_per_class: int = 4) -> LabelledImages:
    labels = np.repeat(np.arange(10), n_per_class)
    images = np.random.default_rng(2).integers(0, 256, (len(labels), 3, 32, 32), dtype=np.uint8)
    return LabelledImages(images, labels, datasets.FASHION_MNIST_LABELS)


def test_samples_round_trip(tmp_path: Path) -> None:
    data = _tiny()
    datasets.save_samples(tmp_path / "s.npz", data)
    back = datasets.load_samples(tmp_path / "s.npz")
    np.testing.assert_array_equal(back.images, data.images)
    np.testing.assert_array_equal(back.labels, data.labels)
    assert back.label_names == data.label_names


def test_load_samples_refuses_pickled_arrays_and_missing_keys(tmp_path: Path) -> None:
    np.savez(tmp_path / "obj.npz", images=np.array([object()]), labels=np.zeros(1), label_names=np.array(["a"]))
    np.savez(tmp_path / "partial.npz", images=np.zeros((1, 3, 32, 32), np.uint8))
    for name in ("obj.npz", "partial.npz", "absent.npz"):
        with pytest.raises(DatasetError):
            datasets.load_samples(tmp_path / name)


def test_labelled_images_checks_its_arrays() -> None:
    with pytest.raises(DatasetError):  # neither images nor feature arrays
        LabelledImages(np.zeros((2, 3, 32, 32), np.int16), np.zeros(2, np.int64), ("a",))
    with pytest.raises(DatasetError):  # one pixel is not an image
        LabelledImages(np.zeros(2, np.uint8), np.zeros(2, np.int64), ("a",))
    with pytest.raises(DatasetError):
        LabelledImages(np.zeros((2, 3, 32, 32), np.uint8), np.zeros(3, np.int64), ("a",))
    with pytest.raises(DatasetError):
        LabelledImages(np.zeros((2, 3, 32, 32), np.uint8), np.array([0, 1]), ("a",))


def test_stratified_split_takes_equal_disjoint_shares() -> None:
    labels = _tiny(5).labels
    picked, rest = datasets.stratified_split(labels, 2, np.random.default_rng(0))
    assert np.bincount(labels[picked]).tolist() == [2] * 10
    assert sorted([*picked, *rest]) == list(range(len(labels)))
    again, _ = datasets.stratified_split(labels, 2, np.random.default_rng(0))
    np.testing.assert_array_equal(picked, again)
    with pytest.raises(DatasetError, match="fewer than 6"):
        datasets.stratified_split(labels, 6, np.random.default_rng(0))


def test_preprocess_scales_pixels_to_unit_float32() -> None:
    x = datasets.preprocess(np.array([[[[0, 51, 255]]]], dtype=np.uint8))
    assert x.dtype == np.float32
    np.testing.assert_allclose(x.ravel(), [0.0, 0.2, 1.0])
    assert datasets.PREPROCESSING["formula"] == "x = uint8_pixels / 255" and datasets.PREPROCESSING["mean"] is None
