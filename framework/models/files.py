"""Files of ``Model``: ``save``, ``save_weights`` / ``load_weights`` by suffix, ``export``, state dicts.

A mixin of :class:`~framework.models.model.Model`. The HDF5 checkpoint is the
core's own (:mod:`framework.models.persistence`); every other format is found
by suffix or name in :mod:`framework.models.formats`, which the
``register_model_formats`` hook fills (safetensors, ``.npz``, ONNX, the
NumPy-only predictor and PyTorch's names come from the built-in plugin
``plugins.formats``), so models import none of the packages that implement
them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from framework.models import formats

__all__ = ["FileMethods"]


class FileMethods:
    """``save``, ``save_weights`` / ``load_weights``, ``export``, ``state_dict`` / ``load_state_dict``."""

    def save(self, filepath: Any, **kwargs: Any) -> None:
        """Write the model (config, weights, optimizer and training state) to HDF5, atomically."""
        from framework.models.persistence import save_model

        save_model(self, filepath, **kwargs)  # type: ignore[arg-type]

    def save_weights(self, filepath: Any, **kwargs: Any) -> None:
        """Write the parameters and buffers; the suffix of ``filepath`` chooses the format.

        ``.safetensors`` and ``.npz`` write a flat state dict under PyTorch's
        names (``names="native"`` for the layer names; see
        :mod:`framework.interchange`); any other suffix (``.h5``) writes the
        HDF5 weights checkpoint (``compression=...``).
        """
        found = formats.find("weights", path=filepath, required=False)
        if found is not None and found.save is not None:
            found.save(self, filepath, **kwargs)
            return
        from framework.models.persistence import save_weights

        save_weights(self, filepath, **kwargs)  # type: ignore[arg-type]

    def load_weights(self, filepath: Any, **kwargs: Any) -> Any:
        """Read parameters and buffers written by :meth:`save_weights` (or by PyTorch).

        ``.safetensors`` and ``.npz`` files may use the layer names or
        PyTorch's (``strict=False`` loads what matches and returns the
        :class:`~framework.interchange.IncompatibleKeys`); any other suffix
        reads an HDF5 checkpoint (``by_name``, ``skip_mismatch``...).
        """
        found = formats.find("weights", path=filepath, required=False)
        if found is not None and found.load is not None:
            return found.load(self, filepath, **kwargs)
        from framework.models.persistence import load_weights

        load_weights(self, filepath, **kwargs)  # type: ignore[arg-type]
        return None

    def export(self, filepath: Any, **kwargs: Any) -> Any:
        """Write the model for another runtime, the format chosen by ``filepath``'s suffix.

        ``.onnx`` runs :func:`framework.onnx.export` (``opset``,
        ``dynamic_batch`` pass through); a path without a suffix is a
        directory receiving a NumPy-only ``predict.py``
        (:func:`framework.export.numpy_predictor`). An unknown suffix raises
        ``ConfigError`` listing the registered ones.
        """
        found = formats.find("export", path=filepath)
        assert found is not None and found.save is not None
        return found.save(self, filepath, **kwargs)

    def state_dict(self, format: str = "native") -> dict[str, np.ndarray]:
        """Parameters and buffers by dotted name: the layer names, or PyTorch's with ``format="torch"``.

        See :mod:`framework.interchange.state_dicts` for the naming rule.
        """
        if format == "native":
            from framework.base.layer import Layer

            return Layer.state_dict(self)  # type: ignore[arg-type]
        found = formats.find("state_dict", name=format)
        assert found is not None and found.save is not None
        result: dict[str, np.ndarray] = found.save(self)
        return result

    def load_state_dict(self, state: dict[str, Any], strict: bool = True) -> Any:
        """Copy ``state`` (layer names or PyTorch's; arrays or CPU tensors) into the model.

        Returns:
            :class:`~framework.interchange.IncompatibleKeys`: with ``strict=False``,
            the missing, unexpected and mis-shaped keys (empty after a strict load).

        Raises:
            ConfigError: with ``strict``, missing or unexpected keys, listed.
            ShapeError: with ``strict``, arrays of the wrong shape, listed.
        """
        found = formats.find("state_dict", name="torch", required=False)
        if found is None or found.load is None:  # no plugin: the layer names only
            from framework.base.layer import Layer

            Layer.load_state_dict(self, state, strict=strict)  # type: ignore[arg-type]
            return None
        return found.load(self, state, strict=strict)
