"""The plugin contract: one hook per kind of object a plugin can provide.

A plugin is a module (or object) with functions marked ``@hookimpl`` whose
names are the hooks below. Each hook receives ``register``, a callable
``register(obj, name=None, aliases=(), override=False)``:

- ``obj`` is the class (or callable) to make available;
- ``name`` defaults to ``obj.__name__``;
- names are matched case-insensitively with ``_`` ignored, so
  ``"kaiming_uniform"`` and ``"KaimingUniform"`` are one name;
- ``override=True`` replaces an object another plugin registered under the same
  name on purpose; without it, two plugins claiming one name is a
  :class:`~framework.PluginError`.

``register_onnx_converters`` is the exception: its ``register`` takes
``register(layer_class, converter)`` and maps a layer class to the function
that writes it as ONNX nodes (see :mod:`framework.onnx`); it is read only when
a model is exported.

Hooks are called with keyword arguments, so an implementation may accept a
subset of them and new arguments added later break no plugin.

Example:
    >>> from framework import hookimpl, Layer
    >>> class Scale(Layer):
    ...     def forward(self, x):
    ...         return 2 * x
    ...     def backward(self, grad_out):
    ...         return 2 * grad_out
    >>> @hookimpl
    ... def register_layers(register):
    ...     register(Scale, aliases=("double",))
"""

from __future__ import annotations

from collections.abc import Callable

import pluggy

__all__ = ["hookspec", "hookimpl", "PROJECT_NAME"]

PROJECT_NAME = "framework"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

Register = Callable[..., None]


@hookspec
def register_layers(register: Register) -> None:
    """Register ``Layer`` subclasses, looked up by ``framework.layers``."""


@hookspec
def register_activations(register: Register) -> None:
    """Register activation ``Layer`` subclasses, usable as ``activation="name"``."""


@hookspec
def register_initializers(register: Register) -> None:
    """Register initializer classes: ``init(shape, dtype=None, rng=None, gain=None)``."""


@hookspec
def register_losses(register: Register) -> None:
    """Register ``Loss`` subclasses, usable as ``compile(loss="name")``."""


@hookspec
def register_optimizers(register: Register) -> None:
    """Register ``Optimizer`` subclasses, usable as ``compile(optimizer="name")``."""


@hookspec
def register_metrics(register: Register) -> None:
    """Register ``Metric`` subclasses, usable as ``compile(metrics=["name"])``."""


@hookspec
def register_onnx_converters(register: Register) -> None:
    """Register ONNX converters: ``register(layer_class, converter)``, used by ``framework.onnx.export``."""


@hookspec
def register_kernel_workloads(register: Register) -> None:
    """Register what ``framework kernels build`` runs: ``register(name, run)``, ``run()`` taking no arguments.

    ``run`` calls the plugin's layers that have compiled kernels
    (:func:`framework.runtime.jit.compiled`) the ways they are used, in each
    dtype: the build compiles ahead of time each kind of arguments those
    calls gave the kernels (:mod:`framework.runtime.ahead`).
    """


@hookspec
def register_model_formats(register: Register) -> None:
    """Register file formats of models: ``register(kind, name, suffixes=(...), save=..., load=...)``.

    ``kind`` is ``"weights"`` (``model.save_weights`` / ``load_weights`` by
    suffix), ``"export"`` (``model.export`` by suffix; ``""`` for a directory)
    or ``"state_dict"`` (``model.state_dict(format=name)``); see
    :mod:`framework.models.formats`.
    """
