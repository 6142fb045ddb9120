"""What a folder's models take as input, and how to make it from samples or an uploaded image.

The input is described once per folder (``InputSpec``): its shape, the
preprocessing the files record (ONNX ``metadata_props``, else the folder's
``model_card.json``, else ``datasets.PREPROCESSING``), how the stored pixels
were made (e.g. Fashion-MNIST's 28x28 grey, zero-padded to 32x32 and repeated
to 3 channels) and the class names. Samples and uploads both become uint8
pixels in that shape first, so the page can show exactly what the model sees,
and then float input through one function.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import warnings
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from quantcore import datasets
from quantcore.datasets import SAMPLES_NAME
from quantcore.errors import DatasetError, InvalidImageError
from quantcore.variants import CARD_NAME, ModelVariants, Status, VariantKey

logger = logging.getLogger(__name__)

# An upload is decoded only when small enough to be a photo, never a decompression bomb.
MAX_IMAGE_BYTES = 20 * 1024 * 1024
MAX_IMAGE_PIXELS = 40_000_000
DEFAULT_SHAPE = datasets.IMAGE_SHAPE
# "28x28 grey zero-padded by 2 px on every side to 32x32 ..." (what quantcore.build records).
_PADDED_GREY = re.compile(r"(\d+)\s*x\s*(\d+)\s+gr[ae]y\b.*?padded by\s+(\d+)\s*px", re.IGNORECASE)
_GREY = re.compile(r"\bgr[ae]y(scale)?\b", re.IGNORECASE)


@dataclass(frozen=True)
class InputSpec:
    """One model input (without the batch axis) and how pixels become it.

    ``grey``: the stored images are grey (repeated to every channel).
    ``pad``: pixels of zero border around a ``shape - 2·pad`` image (a dark
    background: uploads with a light one are inverted when asked to, or on "auto").
    """

    shape: tuple[int, int, int]
    preprocessing: dict[str, Any]
    class_names: tuple[str, ...] | None
    grey: bool = False
    pad: int = 0
    notes: tuple[str, ...] = ()

    @property
    def inner_size(self) -> tuple[int, int]:
        """(height, width) of the image inside its zero border."""
        return self.shape[1] - 2 * self.pad, self.shape[2] - 2 * self.pad

    def names(self, count: int) -> tuple[str, ...]:
        """``count`` class names: the recorded ones when they fit, else ``class 0``, ``class 1``..."""
        if self.class_names is not None and len(self.class_names) == count:
            return self.class_names
        return tuple(f"class {i}" for i in range(count))


def _json_value(text: Any) -> Any:
    if not isinstance(text, str):
        return text
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None


def _recorded(variants: ModelVariants) -> tuple[dict[str, Any], list[str] | None, str]:
    """Preprocessing and labels from the first ONNX variant that records them, else the model card."""
    for key in (VariantKey.ONNX_FLOAT, VariantKey.ONNX_INT8, VariantKey.ONNX_UINT8):
        record = variants.records[key]
        metadata = record.details.get("metadata", {}) if record.status is Status.LOADED else {}
        preprocessing = _json_value(metadata.get("preprocessing"))
        labels = _json_value(metadata.get("labels"))
        if isinstance(preprocessing, dict):
            return preprocessing, labels if isinstance(labels, list) else None, f"{key} metadata"
    card = variants.loaded.card  # read (confined to the folder) when it loaded
    if isinstance(card.get("preprocessing"), dict):
        labels = card.get("labels")
        return card["preprocessing"], labels if isinstance(labels, list) else None, CARD_NAME
    return dict(datasets.PREPROCESSING), None, "default"


def _shape(variants: ModelVariants) -> tuple[int, int, int] | None:
    from quantcore.layers import input_shape

    try:
        shape = input_shape(variants)
    except Exception:  # a graph we cannot read leaves the shape to the other sources
        logger.exception("reading the input shape of %s failed", variants.folder)
        return None
    return tuple(shape[1:]) if shape is not None and len(shape) == 4 else None  # type: ignore[return-value]


def input_spec(variants: ModelVariants) -> InputSpec:
    """The input a folder's models take, read from its files.

    Args:
        variants: a loaded folder.

    Returns:
        An ``InputSpec``; what could not be read is defaulted and said in its notes.
    """
    notes: list[str] = []
    preprocessing, labels, origin = _recorded(variants)
    shape = _shape(variants)
    if shape is None:
        recorded = preprocessing.get("shape")
        if isinstance(recorded, list) and len(recorded) == 3 and all(isinstance(d, int) and d > 0 for d in recorded):
            shape = (recorded[0], recorded[1], recorded[2])
        else:
            shape = DEFAULT_SHAPE
            notes.append(f"input shape unknown: assumed {shape}")
    if origin == "default":
        notes.append("no preprocessing recorded (ONNX metadata or model card): assumed pixels / 255")
    pixels = str(preprocessing.get("pixels") or "")
    grey, pad = shape[0] == 1, 0
    padded = _PADDED_GREY.search(pixels)
    if padded is not None:
        inner, pad = int(padded.group(1)), int(padded.group(3))
        grey = True
        if inner + 2 * pad != shape[1]:
            pad = 0
            notes.append(f"recorded pixels ({pixels!r}) do not fit a {shape} input: padding ignored")
    elif _GREY.search(pixels):
        grey = True
    names = tuple(str(n) for n in labels) if labels else None
    return InputSpec(shape, preprocessing, names, grey, pad, tuple(notes))


def to_model_input(images: np.ndarray, spec: InputSpec) -> np.ndarray:
    """Float32 model input for uint8 pixels (N, C, H, W), as the recorded preprocessing says.

    ``pixels / 255`` (``datasets.preprocess``), then ``(x - mean) / std`` per
    channel when the preprocessing records a mean and std.
    """
    x = datasets.preprocess(images)
    mean, std = spec.preprocessing.get("mean"), spec.preprocessing.get("std")
    if mean is not None and std is not None:
        channels = (1, -1, 1, 1)
        x = (x - np.asarray(mean, np.float32).reshape(channels)) / np.asarray(std, np.float32).reshape(channels)
    return np.ascontiguousarray(x, dtype=np.float32)


# --------------------------------------------------------------------- samples


@dataclass(frozen=True)
class SampleSet:
    """Labelled uint8 images in the model's input shape, and what identifies them for caching."""

    images: np.ndarray
    labels: np.ndarray | None
    label_names: tuple[str, ...]
    description: str
    key: Hashable = field(compare=False)

    def __len__(self) -> int:
        return len(self.images)


def folder_samples(variants: ModelVariants, spec: InputSpec) -> tuple[SampleSet | None, list[str]]:
    """The folder's ``samples.npz``, if it holds images of the model's input shape.

    Returns:
        The samples (None when there are none that fit) and notes saying why not.
    """
    path = variants.sidecar(SAMPLES_NAME)
    if path is None:
        return None, [f"no {SAMPLES_NAME} in this folder"]
    try:
        stat = path.stat()
        data = datasets.load_samples(path)
    except (DatasetError, OSError) as exc:
        return None, [f"{SAMPLES_NAME} unreadable: {exc}"]
    if data.images.shape[1:] != spec.shape:
        return None, [f"{SAMPLES_NAME} holds {data.images.shape[1:]} images; the model takes {spec.shape}"]
    description = f"{SAMPLES_NAME} ({len(data)} images)"
    key = ("samples", str(path), stat.st_size, stat.st_mtime_ns)
    return SampleSet(data.images, data.labels, data.label_names, description, key), []


# ---------------------------------------------------------------------- images


def _open_limited(source: str | os.PathLike[str] | bytes) -> tuple[Any, str]:
    from PIL import Image

    if isinstance(source, bytes):
        raw = source
    else:
        try:
            with open(source, "rb") as handle:
                raw = handle.read(MAX_IMAGE_BYTES + 1)
        except OSError as exc:
            raise InvalidImageError(f"the image cannot be read: {exc.strerror}") from None
    if len(raw) > MAX_IMAGE_BYTES:
        raise InvalidImageError(f"the image file is over {MAX_IMAGE_BYTES:,} bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(raw))
            width, height = image.size
            if width * height > MAX_IMAGE_PIXELS:
                raise InvalidImageError(f"the image is {width}x{height}: over {MAX_IMAGE_PIXELS:,} pixels")
            described = f"uploaded {image.format or 'image'} {width}x{height}"
            image.draft("RGB", (1024, 1024))  # JPEG: decode at a reduced scale, we only need 32x32
            image.load()
    except InvalidImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InvalidImageError(f"the image is too large to decode: {exc}") from None
    except Exception as exc:  # Pillow raises many types on bad bytes
        raise InvalidImageError(f"not an image Pillow can read ({type(exc).__name__})") from None
    return image, described


def image_to_pixels(
    source: str | os.PathLike[str] | bytes, spec: InputSpec, *, invert: bool | None = None
) -> tuple[np.ndarray, list[str]]:
    """Decode an image file into uint8 pixels (C, H, W) shaped like the model's samples.

    Grey models get a grey image; a zero-padded input gets the image fitted
    into its inner square and the border left at zero; others are centre-cropped
    to the input's aspect and resized.

    Args:
        source: a file path or the file's bytes (any format Pillow reads).
        spec: the model input (``input_spec``).
        invert: invert the pixels; None decides for zero-padded inputs
            (trained on dark backgrounds) by the image's border: light -> inverted.

    Returns:
        The pixels and notes on what was done to the image.

    Raises:
        InvalidImageError: unreadable, over the byte or pixel limit.
    """
    from PIL import Image, ImageOps

    image, described = _open_limited(source)
    notes = [described]
    try:
        image = ImageOps.exif_transpose(image)
    except Exception:  # a broken EXIF block leaves the image as stored
        notes.append("EXIF orientation unreadable: used as stored")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Transparent parts become white, as a viewer shows them.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    image = image.convert("L" if spec.grey else "RGB")
    height, width = spec.inner_size
    if invert is None and spec.pad > 0:
        border = np.concatenate([np.asarray(image)[[0, -1]].reshape(-1), np.asarray(image)[:, [0, -1]].reshape(-1)])
        invert = float(border.mean()) > 127.5
        if invert:
            notes.append("light background inverted: the model was trained on light-on-dark images")
    if invert:
        image = ImageOps.invert(image)
        if spec.pad == 0:
            notes.append("inverted")
    if spec.pad > 0:
        fitted = ImageOps.pad(image, (width, height), method=Image.Resampling.LANCZOS, color=0)
        notes.append(f"fitted into {width}x{height}, zero border of {spec.pad} px")
    else:
        fitted = ImageOps.fit(image, (width, height), method=Image.Resampling.LANCZOS)
        notes.append(f"centre-cropped and resized to {width}x{height}")
    array = np.asarray(fitted, dtype=np.uint8)
    if spec.grey:
        array = np.repeat(array[None], spec.shape[0], axis=0)
    else:
        array = np.ascontiguousarray(array.transpose(2, 0, 1))
        if spec.shape[0] != 3:
            raise InvalidImageError(f"cannot make a {spec.shape[0]}-channel colour input")
    if spec.pad > 0:
        array = np.pad(array, ((0, 0), (spec.pad, spec.pad), (spec.pad, spec.pad)))
    return np.ascontiguousarray(array), notes


def pixels_to_picture(pixels: np.ndarray, *, scale: int = 1) -> np.ndarray:
    """uint8 (C, H, W) pixels as an (H·scale, W·scale, 3) picture for display (nearest-neighbour)."""
    picture = pixels[:3] if pixels.shape[0] >= 3 else np.repeat(pixels[:1], 3, axis=0)
    picture = picture.transpose(1, 2, 0)
    if scale > 1:
        picture = picture.repeat(scale, axis=0).repeat(scale, axis=1)
    return np.ascontiguousarray(picture)
