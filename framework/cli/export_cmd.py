"""``framework export CHECKPOINT --format numpy OUT_DIR``: a deployable artefact from a saved model."""

from __future__ import annotations

import os

from framework.errors import CheckpointError, ConfigError, ExportError

__all__ = ["FORMATS", "export_checkpoint"]

FORMATS = ("numpy", "onnx")
"""What ``--format`` accepts."""


def export_checkpoint(checkpoint: str | os.PathLike[str], fmt: str, out: str | os.PathLike[str]) -> str:
    """Load the model saved in ``checkpoint`` (HDF5) and export it; returns what was written.

    Args:
        checkpoint: a whole-model ``.h5`` file (``model.save``).
        fmt: ``"numpy"`` (``out`` is a directory receiving ``predict.py`` and
            ``weights.npz``) or ``"onnx"`` (``out`` is the ``.onnx`` file or a
            directory receiving ``model.onnx``).
        out: where to write.

    Raises:
        ConfigError: an unknown format.
        CheckpointError: an unreadable checkpoint.
        ExportError: a layer that cannot be exported, or an output path that
            cannot be written (a missing folder, a file where a folder is
            needed, a failed write); a previous export at ``out`` survives a
            failed one.
    """
    if fmt not in FORMATS:
        raise ConfigError(f"export: --format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if not os.path.isfile(checkpoint):  # before any optional dependency is asked for
        what = "is a directory" if os.path.isdir(checkpoint) else "does not exist"
        raise CheckpointError(f"export: {os.fspath(checkpoint)!r} {what}; give a model.save checkpoint")
    from framework import load_model

    model = load_model(checkpoint, compile=False)
    if fmt == "numpy":
        from framework.export import numpy_predictor

        return str(numpy_predictor(model, out))
    from framework.onnx import export

    target = os.fspath(out)
    if not target.endswith(".onnx"):
        try:
            os.makedirs(target, exist_ok=True)
        except OSError as exc:  # a file where the folder should be, no permission...
            raise ExportError(
                f"cannot export to {target!r}: {type(exc).__name__}: {exc}; give a .onnx file path "
                "or a folder"
            ) from exc
        target = os.path.join(target, "model.onnx")
    export(model, target)
    return target
