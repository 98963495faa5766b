"""Reading IDX files, the format of MNIST and Fashion-MNIST: :func:`load_idx`."""

from __future__ import annotations

import gzip
import math
import zlib
from typing import Any

import numpy as np

from framework.datasets._common import PathLike, _path
from framework.errors import DataError

__all__ = ["load_idx"]

# IDX type code (third byte of the magic number) -> big-endian element dtype.
_IDX_DTYPES: dict[int, np.dtype[Any]] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"


def load_idx(path: PathLike) -> np.ndarray:
    """Read one IDX file (the MNIST format), gzip-compressed or not.

    Format: a 4-byte magic number ``0x00 0x00 <type> <rank>``, then ``rank``
    big-endian uint32 dimension sizes, then ``prod(sizes)`` big-endian elements.
    Type codes: ``0x08`` uint8, ``0x09`` int8, ``0x0B`` int16, ``0x0C`` int32,
    ``0x0D`` float32, ``0x0E`` float64. Compression is detected from the gzip
    magic bytes ``1f 8b``, not from the file name.

    Args:
        path: the file.

    Returns:
        An array of shape ``sizes`` in native byte order with the file's dtype
        (``uint8`` for the MNIST family), writable.

    Raises:
        DataError: naming the file, for a missing or unreadable file, a broken
            gzip stream, a wrong magic number, an unknown type code, or a size
            that does not match the header (expected vs actual bytes).
        ConfigError: if ``path`` is not a ``str`` or ``os.PathLike``.
    """
    path = _path("load_idx: path", path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        raise DataError(f"load_idx: no such file: {path}") from exc
    except OSError as exc:
        raise DataError(f"load_idx: cannot read {path}: {exc}") from exc
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"load_idx: {path}: corrupt or truncated gzip stream ({exc})") from exc

    if len(raw) < 4:
        raise DataError(
            f"load_idx: {path}: truncated file: expected at least a 4-byte magic number, got {len(raw)} bytes"
        )
    zero0, zero1, code, rank = raw[0], raw[1], raw[2], raw[3]
    if zero0 != 0 or zero1 != 0:
        raise DataError(
            f"load_idx: {path}: wrong magic number 0x{raw[:4].hex()}: an IDX file starts with two zero "
            "bytes, a type code and the rank (e.g. 0x00000803 for MNIST images)"
        )
    if code not in _IDX_DTYPES:
        known = ", ".join(f"0x{c:02X} ({d.name})" for c, d in _IDX_DTYPES.items())
        raise DataError(f"load_idx: {path}: unknown IDX type code 0x{code:02X}; expected one of {known}")
    header = 4 + 4 * rank
    if len(raw) < header:
        raise DataError(
            f"load_idx: {path}: truncated file: the header of a rank-{rank} IDX file takes "
            f"{header} bytes, got {len(raw)}"
        )
    shape = tuple(int(s) for s in np.frombuffer(raw, dtype=">u4", count=rank, offset=4))
    dtype = _IDX_DTYPES[code]
    count = math.prod(shape)  # Python ints: a crafted header cannot overflow to a small count
    expected = header + count * dtype.itemsize
    if len(raw) != expected:
        problem = "truncated file" if len(raw) < expected else "trailing bytes after the data"
        raise DataError(
            f"load_idx: {path}: {problem}: a {dtype.name} array of shape {shape} needs "
            f"{expected} bytes (header {header} + data {count * dtype.itemsize}), got {len(raw)}"
        )
    data = np.frombuffer(raw, dtype=dtype, count=count, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="))
