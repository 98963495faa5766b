"""Guarded access to an untrusted HDF5 file: links, dataset storage, attributes.

HDF5 lets an object live elsewhere: a link may name another file (external
link) or another path (soft link), a dataset may keep its bytes in raw files
(external storage) or assemble them from other files (virtual datasets), and
a filter may be a plugin library loaded at run time. A checkpoint uses none of
that. Everything here looks at an object's metadata only and refuses, with a
:class:`~framework.CheckpointError` naming the path, anything but what
``docs/checkpoint-format.md`` allows, before a single byte of array data is
read or another file is opened:

- every object is reached through hard links only, one path component at a
  time, without ever traversing a soft or external link (``H5Lget_info`` on
  the link, never ``H5Oexists_by_name``, which follows it);
- every dataset is contiguous or chunked, stored inside this file, not
  virtual, of fixed size, filtered only by deflate, shuffle, fletcher32 or
  LZF, of an IEEE float or integer dtype, and holds the bytes it declares
  (allocated contiguous storage inside the file, or every chunk written);
- every attribute is a scalar text or integer of bounded size.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from framework.errors import CheckpointError, FrameworkError

if TYPE_CHECKING:
    import h5py

__all__ = [
    "MAX_ATTRIBUTE_BYTES",
    "MAX_COMPRESSION_RATIO",
    "h5py_module",
    "open_checkpoint",
    "member",
    "child_names",
    "check_dataset",
    "attr_text",
    "attr_json",
    "attr_int",
    "has_attr",
]

#: Largest text attribute read (a model config of many thousand layers fits).
MAX_ATTRIBUTE_BYTES = 64 * 1024 * 1024
#: Deflate cannot expand data more than 1032-fold; LZF much less. A filtered
#: dataset that declares more than this many times its stored size is refused.
MAX_COMPRESSION_RATIO = 1100

_ALLOWED_FILTERS = {1: "deflate (gzip)", 2: "shuffle", 3: "fletcher32", 32000: "lzf"}
_FLOAT_SIZES = (2, 4, 8)
_INT_SIZES = (1, 2, 4, 8)


def h5py_module() -> Any:
    """``h5py``, or a :class:`CheckpointError` with the install hint."""
    try:
        import h5py
    except ImportError as exc:  # pragma: no cover - h5py is a run-time dependency
        raise CheckpointError("checkpoints need h5py: pip install h5py") from exc
    return h5py


@contextlib.contextmanager
def open_checkpoint(path: str) -> Iterator[h5py.File]:
    """Open ``path`` read-only; turn every error raised inside into a ``CheckpointError``.

    ``FrameworkError`` s raised while rebuilding the model are wrapped with the
    path in front; any other exception (h5py's ``OSError``, a ``KeyError`` from
    a damaged B-tree...) becomes "corrupted or inconsistent".
    """
    h5py = h5py_module()
    if not isinstance(path, str):
        raise CheckpointError(f"a checkpoint path must be a str or os.PathLike, got {type(path).__name__}")
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path!r} does not exist or is not a regular file")
    try:
        handle = h5py.File(path, "r")
    except Exception as exc:
        raise CheckpointError(
            f"{path!r} is not a readable HDF5 file (truncated, corrupted or another format): {exc}"
        ) from exc
    try:
        yield handle
    except CheckpointError:
        raise
    except FrameworkError as exc:
        raise CheckpointError(f"{path!r}: {exc}") from exc
    except (Exception, RecursionError) as exc:
        raise CheckpointError(f"{path!r} is corrupted or inconsistent: {type(exc).__name__}: {exc}") from exc
    finally:
        with contextlib.suppress(Exception):
            handle.close()


def _link_type(group: h5py.Group, name: str) -> int | None:
    """The class of the link ``name`` in ``group`` (``None`` if absent), without following it."""
    key = name.encode("utf-8")
    if not group.id.links.exists(key):
        return None
    return int(group.id.links.get_info(key).type)


def _refuse_link(kind: int | None, here: str) -> None:
    h5py = h5py_module()
    names = {h5py.h5l.TYPE_SOFT: "a soft link", h5py.h5l.TYPE_EXTERNAL: "an external link"}
    raise CheckpointError(
        f"{here} is {names.get(kind, f'a link of class {kind}')}, expected a hard-linked "
        "object stored in this file; links are never followed"
    )


def member(group: h5py.Group, path: str, where: str) -> Any | None:
    """The object at ``path`` below ``group`` reached through hard links only, or ``None``.

    Args:
        group: where to start.
        path: ``a/b/c``, walked one component at a time.
        where: ``group``'s path in the file, for messages.

    Raises:
        CheckpointError: naming the full path when a component is a soft or
            external link (never followed) or a user-defined link.
    """
    h5py = h5py_module()
    node = group
    here = where.rstrip("/")
    for part in path.split("/"):
        if not part or part in (".", ".."):
            raise CheckpointError(f"invalid object name {path!r} below {where}")
        here = f"{here}/{part}"
        if not isinstance(node, h5py.Group):
            return None
        kind = _link_type(node, part)
        if kind is None:
            return None
        if kind != h5py.h5l.TYPE_HARD:
            _refuse_link(kind, here)
        node = node[part]
        if not isinstance(node, (h5py.Group, h5py.Dataset)):
            raise CheckpointError(f"{here} is a {type(node).__name__}, expected a group or dataset")
    return node


def child_group(parent: h5py.Group, name: str, where: str) -> Any | None:
    """The group ``name`` below ``parent`` (hard links only, see :func:`member`), or ``None``.

    Raises:
        CheckpointError: when ``name`` is a dataset.
    """
    found = member(parent, name, where)
    if found is not None and not isinstance(found, h5py_module().Group):
        raise CheckpointError(f"{where.rstrip('/')}/{name} should be a group, found a dataset")
    return found


def child_names(group: h5py.Group, where: str) -> list[str]:
    """The link names in ``group`` (not followed), each checked to be a hard link."""
    h5py = h5py_module()
    names = [name for name in group.keys()]
    for name in names:
        kind = _link_type(group, name)
        if kind != h5py.h5l.TYPE_HARD:
            _refuse_link(kind, f"{where.rstrip('/')}/{name}")
    return names


def _dtype_ok(dtype: np.dtype, kind: str) -> bool:
    if kind == "f":
        return dtype.kind == "f" and dtype.itemsize in _FLOAT_SIZES
    return dtype.kind in "iu" and dtype.itemsize in _INT_SIZES


def check_dataset(
    dataset: h5py.Dataset,
    where: str,
    *,
    shape: tuple[int, ...],
    kind: str,
    file_size: int,
) -> int:
    """Check one dataset's metadata before reading it; return its size in bytes.

    Args:
        dataset: the dataset, reached through :func:`member`.
        where: its path in the file.
        shape: the shape the model expects.
        kind: ``"f"`` for a floating-point array, ``"i"`` for an integer one.
        file_size: the checkpoint's size in bytes.

    Raises:
        CheckpointError: naming ``where`` and the expected and actual value,
            for storage outside the file, a virtual dataset, a layout or filter
            a checkpoint does not use, a wrong shape or dtype, or less stored
            data than the shape declares.
    """
    h5py = h5py_module()
    if dataset.is_virtual:
        raise CheckpointError(
            f"{where} is a virtual dataset (data from other files); expected a plain dataset"
        )
    if dataset.external:
        raise CheckpointError(
            f"dataset {where} keeps its data in external files {[e[0] for e in dataset.external]!r}; "
            "expected data stored inside the checkpoint"
        )
    actual = tuple(int(n) for n in dataset.shape) if dataset.shape is not None else None
    if actual != tuple(shape):
        raise CheckpointError(f"dataset {where} has shape {actual}, the model expects {tuple(shape)}")
    if dataset.maxshape != dataset.shape:
        raise CheckpointError(
            f"dataset {where} is resizable (maxshape {dataset.maxshape}); expected fixed size"
        )
    dtype = dataset.dtype
    if not _dtype_ok(dtype, kind):
        wanted = "a float16/32/64" if kind == "f" else "an 8- to 64-bit integer"
        raise CheckpointError(f"dataset {where} has dtype {dtype}, expected {wanted} dtype")
    nbytes = math.prod(shape) * dtype.itemsize
    plist = dataset.id.get_create_plist()
    layout = plist.get_layout()
    filters = [int(plist.get_filter(i)[0]) for i in range(plist.get_nfilters())]
    unknown = [code for code in filters if code not in _ALLOWED_FILTERS]
    if unknown:
        raise CheckpointError(
            f"dataset {where} uses HDF5 filter(s) {unknown}; a checkpoint may use only "
            f"{sorted(_ALLOWED_FILTERS.values())} (no filter plugin is ever loaded)"
        )
    stored = int(dataset.id.get_storage_size())
    if layout == h5py.h5d.CONTIGUOUS:
        if filters:
            raise CheckpointError(f"dataset {where} is contiguous but declares filters {filters}")
        if nbytes:
            offset = dataset.id.get_offset()
            if offset is None or stored < nbytes:
                raise CheckpointError(
                    f"dataset {where} declares {nbytes} bytes but holds {stored} (never written)"
                )
            if offset + nbytes > file_size:
                raise CheckpointError(
                    f"dataset {where} lies at bytes {offset}..{offset + nbytes}, past the end of the "
                    f"file ({file_size} bytes): the file is truncated"
                )
    elif layout == h5py.h5d.CHUNKED:
        chunks = dataset.chunks or ()
        if len(chunks) != len(shape) or any(c < 1 or c > max(n, 1) for c, n in zip(chunks, shape)):
            raise CheckpointError(
                f"dataset {where} has chunk shape {chunks}, invalid for shape {tuple(shape)}"
            )
        expected_chunks = math.prod(-(-n // c) for n, c in zip(shape, chunks))
        written = int(dataset.id.get_num_chunks()) if nbytes else 0
        if written != expected_chunks:
            raise CheckpointError(
                f"dataset {where} has {written} of its {expected_chunks} chunks written; the file does "
                "not hold the data it declares"
            )
        floor = nbytes // MAX_COMPRESSION_RATIO if filters else nbytes
        if stored < floor:
            raise CheckpointError(
                f"dataset {where} declares {nbytes} bytes but stores {stored}, more than any "
                f"compression achieves (at most {MAX_COMPRESSION_RATIO}x); refused"
            )
    else:
        names = {h5py.h5d.COMPACT: "compact", h5py.h5d.VIRTUAL: "virtual"}
        raise CheckpointError(
            f"dataset {where} has {names.get(layout, str(layout))} layout; expected contiguous or chunked"
        )
    return nbytes


def has_attr(obj: Any, key: str) -> bool:
    """Whether ``obj`` has the attribute ``key`` (reads nothing)."""
    return key in obj.attrs


def _attr_meta(obj: Any, key: str, where: str) -> Any:
    if key not in obj.attrs:
        raise CheckpointError(f"missing attribute {key!r} in {where}")
    attr = obj.attrs.get_id(key)
    if attr.shape not in ((), None):
        raise CheckpointError(f"attribute {key!r} in {where} has shape {attr.shape}, expected a scalar")
    return attr


def attr_text(obj: Any, key: str, where: str) -> str:
    """A scalar text attribute, its size checked before it is read."""
    h5py = h5py_module()
    attr = _attr_meta(obj, key, where)
    type_class = attr.get_type().get_class()
    if type_class != h5py.h5t.STRING:
        raise CheckpointError(
            f"attribute {key!r} in {where} should be text, got HDF5 type class {type_class}"
        )
    if attr.get_storage_size() > MAX_ATTRIBUTE_BYTES:
        raise CheckpointError(f"attribute {key!r} in {where} is larger than {MAX_ATTRIBUTE_BYTES} bytes")
    value = obj.attrs[key]
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="strict")
    if not isinstance(value, str):
        raise CheckpointError(f"attribute {key!r} in {where} should be text, got {type(value).__name__}")
    if len(value) > MAX_ATTRIBUTE_BYTES:
        raise CheckpointError(f"attribute {key!r} in {where} is longer than {MAX_ATTRIBUTE_BYTES} characters")
    return value


def attr_json(obj: Any, key: str, where: str, expected: type) -> Any:
    """A text attribute parsed as JSON, which must be of type ``expected``."""
    text = attr_text(obj, key, where)
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise CheckpointError(f"attribute {key!r} in {where} is not valid JSON: {exc}") from exc
    if not isinstance(value, expected):
        raise CheckpointError(
            f"attribute {key!r} in {where} should be a JSON {expected.__name__}, got {type(value).__name__}"
        )
    return value


def attr_int(obj: Any, key: str, where: str, *, low: int, high: int, default: int | None = None) -> int:
    """A scalar integer attribute in ``[low, high]`` (``default`` when absent, if given)."""
    h5py = h5py_module()
    if default is not None and key not in obj.attrs:
        return default
    attr = _attr_meta(obj, key, where)
    if attr.get_type().get_class() != h5py.h5t.INTEGER:
        raise CheckpointError(f"attribute {key!r} in {where} should be an integer")
    value = int(obj.attrs[key])
    if not low <= value <= high:
        raise CheckpointError(
            f"attribute {key!r} in {where} is {value}, expected an integer in [{low}, {high}]"
        )
    return value
