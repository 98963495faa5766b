"""The built-in plugins.

Each module here is a plugin declared under the ``framework`` entry-point group
in this project's ``pyproject.toml``, loaded and registered exactly as a third
party's plugin is.
"""
