"""HDF5 checkpoints: whole models, weights alone, optimizer and training state.

File layout (format ``framework.checkpoint``, version 1; see
``docs/checkpoint-format.md``)::

    /                         attrs: format, format_version, framework_version,
                                     contents ("model" or "weights")
    /model                    attrs: config (JSON: the model rebuilt through the
                                     registry), plugins (JSON: class -> distribution
                                     and version)
    /weights/<layer>/<param>  one dataset per parameter and buffer; nested names
                              (``cell.weight``) become nested groups; parameters
                              carry a ``trainable`` attribute (0 or 1)
    /compile                  attrs: config (JSON: optimizer, loss, metrics)
    /optimizer                attrs: iterations; /optimizer/slots/<param>/<slot>
    /training                 attrs: state (JSON: epoch, framework RNG state)

Whole models are saved and loaded through :mod:`framework.models.persistence`
(``model.save``, ``framework.load_model``), which hands this package the
model's config and the function that rebuilds it: the format knows no model.
This module is the public face of :mod:`framework.saving`; the work is split
by concern:

- :mod:`framework.saving.writer`: ``save_model`` (given the model's JSON
  config), :func:`save_weights`;
- :mod:`framework.saving.atomic`: :func:`atomic_h5`, the atomic and durable
  file replacement (a failed or killed save leaves the previous file);
- :mod:`framework.saving.reader`: ``load_model`` (given the function that
  rebuilds a model from its config), :func:`load_weights`,
  :func:`restore_rng_state`;
- :mod:`framework.saving.hdf5`: what HDF5 features a file may use (hard links
  only, data inside the file, bounded sizes), checked before anything is read;
- :mod:`framework.saving.validation`: value ranges, counters and the call
  arguments a functional config may pass.

Loading never unpickles, never evaluates code, never opens another file and
never changes global state; every problem with a file raises
:class:`~framework.CheckpointError`. ``docs/security.md`` states the threat
model.
"""

from __future__ import annotations

from framework.saving.atomic import atomic_h5
from framework.saving.reader import DEFAULT_MAX_BYTES, load_weights, restore_rng_state
from framework.saving.validation import CheckpointWarning
from framework.saving.writer import FORMAT_NAME, FORMAT_VERSION, save_weights

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "DEFAULT_MAX_BYTES",
    "CheckpointWarning",
    "save_weights",
    "load_weights",
    "restore_rng_state",
    "atomic_h5",
]
