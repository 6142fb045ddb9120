"""Uploaded images as model pixels: decoded within limits, fitted to the model's input, and back for display."""

from __future__ import annotations

import io
import os
import re
import warnings
from typing import Any

import numpy as np

from quantcore import settings
from quantcore.errors import InvalidImageError
from quantcore.evaluate.inputs import InputSpec


def apply_pixel_limit() -> int:
    """Set Pillow's own decompression-bomb limit (``Image.MAX_IMAGE_PIXELS``) to ``QP_MAX_IMAGE_PIXELS``.

    Every Pillow open in the process then refuses what this module would: Pillow
    warns above the limit and raises above twice it, whoever opens the file.

    Returns:
        The limit now in force.
    """
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = settings.current().max_image_pixels
    return Image.MAX_IMAGE_PIXELS


def _open_limited(source: str | os.PathLike[str] | bytes) -> tuple[Any, str]:
    from PIL import Image

    # An upload is decoded only when small enough to be a photo, never a decompression bomb.
    max_bytes, max_pixels = settings.current().max_image_bytes, apply_pixel_limit()
    if isinstance(source, bytes):
        raw = source
    else:
        try:
            with open(source, "rb") as handle:
                raw = handle.read(max_bytes + 1)
        except OSError as exc:
            raise InvalidImageError(f"the image cannot be read: {exc.strerror}") from None
    if len(raw) > max_bytes:
        raise InvalidImageError(f"the image file is over {max_bytes:,} bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(raw))
            width, height = image.size
            if width * height > max_pixels:
                raise InvalidImageError(
                    f"the image is {width}x{height}, over {max_pixels:,} pixels (QP_MAX_IMAGE_PIXELS): "
                    "too large to decode safely"
                )
            described = f"uploaded {image.format or 'image'} {width}x{height}"
            image.draft("RGB", (1024, 1024))  # JPEG: decode at a reduced scale, we only need 32x32
            image.load()
    except InvalidImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow refuses at its own open, before our size check: say the same thing in our words.
        found = re.search(r"Image size \((\d+) pixels\)", str(exc))
        size = f"{int(found[1]):,} pixels" if found else "too many pixels"
        raise InvalidImageError(
            f"the image has {size}, over {max_pixels:,} pixels (QP_MAX_IMAGE_PIXELS): too large to decode safely"
        ) from None
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
