"""Built-in plugin: recurrent cells and layers (RNN, LSTM, GRU) with backpropagation through time.

Every class follows PyTorch's constructor arguments, parameter names, weight
layouts and gate order, so a ``state_dict`` copies between the two unchanged:

- ``RNNCell`` / ``RNN``: ``h' = act(W_ih x + b_ih + W_hh h + b_hh)``;
- ``LSTMCell`` / ``LSTM``: gates stacked ``i, f, g, o`` in ``weight_ih`` of
  shape ``(4*hidden, input)``;
- ``GRUCell`` / ``GRU``: gates stacked ``r, z, n`` in ``weight_ih`` of shape
  ``(3*hidden, input)``, with PyTorch's ``n = tanh(W_in x + b_in + r * (W_hn h + b_hn))``.

Every layer is written in the context form: what its backward needs lives on
the call's context, so a cell may be called at every step of a hand-unrolled
loop in a functional ``Model`` (its gradients summing over the steps).

This module is the plugin's entry point (``recurrent = "plugins.recurrent"``)
and registers the classes, which live in:

- :mod:`plugins.recurrent_kernels`: the per-direction recurrences (one
  whole-array step over the batch per time step) and their backward;
- :mod:`plugins.recurrent_cells`: ``RNNCell``, ``LSTMCell``, ``GRUCell``;
- :mod:`plugins.recurrent_bptt`: the stacked, bidirectional engine of the
  sequence layers;
- :mod:`plugins.recurrent_layers`: ``RNN``, ``LSTM``, ``GRU``.
"""

from __future__ import annotations

from typing import Any

from framework.registry.hookspecs import hookimpl
from plugins.recurrent_cells import GRUCell, LSTMCell, RNNCell
from plugins.recurrent_layers import GRU, LSTM, RNN

__all__ = ["GRU", "LSTM", "RNN", "GRUCell", "LSTMCell", "RNNCell", "register_layers"]


@hookimpl
def register_layers(register: Any) -> None:
    """Register the recurrent cells and sequence layers."""
    register(RNNCell)
    register(LSTMCell)
    register(GRUCell)
    register(RNN)
    register(LSTM)
    register(GRU)
