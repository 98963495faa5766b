"""Models: the functional graph (``Input``, nodes), ``Model`` and
``Sequential``, their (de)serialisation to JSON config, and ``summary()``.
"""
