"""Make the plugin available to its tests, installed or not.

Installed (``pip install -e .``), the framework finds the plugin through its
entry point. Run from a plain checkout, ``src`` is put on the path and the
plugin module is registered by hand, exactly as a user does with
``FRAMEWORK_DISABLE_PLUGIN_AUTOLOAD=1``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from framework.registry import REGISTRY

if not REGISTRY.contains("layers", "FeatureScale"):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    import framework_example.plugin

    REGISTRY.register_plugin(
        framework_example.plugin, name="example", distribution="framework-plugin-example", version="0.1.0"
    )
