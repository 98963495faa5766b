"""The objects of the plugin contract: what a plugin subclasses or builds with.

``Layer`` (forward, hand-written backward, shapes, state), ``Parameter`` and
``Buffer``, the base classes of the other pluggable kinds (``Loss``,
``Metric``, ``Initializer``, ``Optimizer``), ``Configurable`` (the
``get_config`` / ``from_config`` round trip) and the argument validators that
layers share. Nothing here knows a concrete layer or a model.
"""
