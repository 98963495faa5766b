"""Models: the functional graph (``Input``, nodes) and its executor, ``Model``
and ``Sequential``, ``compile``, their (de)serialisation to JSON config,
``summary()``, and ``clone_model``.
"""

from framework.models.cloning import clone_model
from framework.models.graph import Input
from framework.models.model import Model
from framework.models.sequential import Sequential
from framework.models.serialize import deserialize_model, serialize_model

__all__ = ["Input", "Model", "Sequential", "clone_model", "deserialize_model", "serialize_model"]
