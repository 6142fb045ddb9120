"""Decompression bombs, made in a moment and a few kilobytes of memory.

A run of zeros deflates block by block to the same bytes: after a full flush
the compressor starts afresh, so one compressed megabyte of zeros, repeated,
is a valid stream of as many megabytes as wanted. Every bomb here is a real,
well-formed file of its kind (an ``.npz`` numpy loads, an IDX ``.gz`` gzip
reads, a ``torch.save`` zip torch loads, a PNG Pillow decodes) that inflates
to gigabytes; none of them is ever held whole in memory while it is made.
"""

from __future__ import annotations

import collections
import gzip
import io
import pickle
import struct
import zlib
from pathlib import Path

import numpy as np

BLOCK = 1 << 20  # zeros per repeated compressed block


def _zeros_deflated(count: int, *, head: bytes = b"", wbits: int = -15) -> tuple[bytes, int, int]:
    """``head`` followed by ``count`` zero bytes, deflated: ``(stream, crc32, adler32)`` of the whole."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, wbits)
    parts = [compressor.compress(head), compressor.flush(zlib.Z_FULL_FLUSH)]
    crc, adler = zlib.crc32(head), zlib.adler32(head)
    whole, rest = divmod(count, BLOCK)
    if whole:
        zeros = bytes(BLOCK)
        parts.append((compressor.compress(zeros) + compressor.flush(zlib.Z_FULL_FLUSH)) * whole)
        for _ in range(whole):  # the checksums still see every byte: a second or so per GB
            crc, adler = zlib.crc32(zeros, crc), zlib.adler32(zeros, adler)
    parts += [compressor.compress(bytes(rest)), compressor.flush(zlib.Z_FINISH)]
    crc, adler = zlib.crc32(bytes(rest), crc), zlib.adler32(bytes(rest), adler)
    return b"".join(parts), crc, adler


def write_zip(path: Path, members: dict[str, tuple[bytes, int]]) -> None:
    """A zip of ``name -> (head bytes, zero count)`` members, each deflated (sizes under 4 GB: no ZIP64)."""
    out, directory = io.BytesIO(), []
    for name, (head, zeros) in members.items():
        data, crc, _ = _zeros_deflated(zeros, head=head)
        size, offset, encoded = len(head) + zeros, out.tell(), name.encode()
        out.write(struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, 8, 0, 0, crc, len(data), size, len(encoded), 0))
        out.write(encoded + data)
        directory.append(
            struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, 8, 0, 0, crc, len(data), size, len(encoded),
                        0, 0, 0, 0, 0, offset) + encoded
        )  # fmt: skip
    start = out.tell()
    out.write(b"".join(directory))
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(directory), len(directory), out.tell() - start, start, 0)
    path.write_bytes(out.getvalue() + end)


def npy_header(shape: tuple[int, ...], dtype: str) -> bytes:
    """A version 1.0 ``.npy`` header for an array of ``shape`` and ``dtype``."""
    out = io.BytesIO()
    np.lib.format.write_array_header_1_0(out, {"descr": np.dtype(dtype).str, "fortran_order": False, "shape": shape})
    return out.getvalue()


def _label_names() -> bytes:
    out = io.BytesIO()
    np.lib.format.write_array(out, np.array([f"class {n}" for n in range(10)]))
    return out.getvalue()


def npz_bomb(path: Path, images: int) -> None:
    """A real ``samples.npz`` of ``images`` zero images (uint8, 3x32x32) and labels, deflated."""
    write_zip(path, {
        "images.npy": (npy_header((images, 3, 32, 32), "|u1"), images * 3072),
        "labels.npy": (npy_header((images,), "<i8"), images * 8),
        "label_names.npy": (_label_names(), 0),
    })  # fmt: skip


def npz_claiming(path: Path, images: int) -> None:
    """A few-KB ``samples.npz`` whose ``images.npy`` header claims ``images`` images but holds one."""
    write_zip(path, {
        "images.npy": (npy_header((images, 3, 32, 32), "|u1"), 3072),
        "labels.npy": (npy_header((1,), "<i8"), 8),
        "label_names.npy": (_label_names(), 0),
    })  # fmt: skip


def idx_bomb(path: Path, images: int, side: int = 28) -> None:
    """A gzipped IDX file of ``images`` zero images of ``side`` x ``side``, as Fashion-MNIST's test images."""
    head = bytes([0, 0, 0x08, 3]) + struct.pack(">3I", images, side, side)
    data, crc, _ = _zeros_deflated(images * side * side, head=head)
    size = len(head) + images * side * side
    path.write_bytes(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff" + data + struct.pack("<2L", crc, size & 0xFFFFFFFF))
    with gzip.open(path) as check:
        assert check.read(len(head)) == head


def png_bomb(width: int, height: int) -> bytes:
    """A grey PNG of zeros (every row: filter byte 0, then zeros) as bytes."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    data, _, adler = _zeros_deflated((width + 1) * height)
    idat = b"\x78\xda" + data + struct.pack(">I", adler)  # zlib wrapper around the raw deflate stream
    header = struct.pack(">2I5B", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


class _Storage:
    """Stands for a float32 storage of ``numel`` elements: torch's pickler writes it as a persistent id."""

    def __init__(self, numel: int) -> None:
        self.numel = numel


class _Tensor:
    def __init__(self, storage: _Storage) -> None:
        self.storage = storage

    def __reduce__(self) -> tuple:
        import torch

        size = (self.storage.numel,)
        return torch._utils._rebuild_tensor_v2, (self.storage, 0, size, (1,), False, collections.OrderedDict())


class _TorchPickler(pickle.Pickler):
    def persistent_id(self, obj: object) -> tuple | None:
        import torch

        if isinstance(obj, _Storage):
            return ("storage", torch.FloatStorage, "0", "cpu", obj.numel)
        return None


def pt_bomb(path: Path, megabytes: int) -> None:
    """A ``torch.save``-format state dict whose one float32 tensor of ``megabytes`` MB is deflated zeros."""
    numel = megabytes * 2**20 // 4
    pickled = io.BytesIO()
    _TorchPickler(pickled, protocol=2).dump({"state_dict": {"weight": _Tensor(_Storage(numel))}})
    write_zip(path, {
        "archive/data.pkl": (pickled.getvalue(), 0),
        "archive/byteorder": (b"little", 0),
        "archive/data/0": (b"", numel * 4),
        "archive/version": (b"3\n", 0),
    })  # fmt: skip
