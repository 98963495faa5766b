"""framework-plugin-example: a third-party plugin for the framework.

Provides a layer (:class:`FeatureScale`), an activation (:class:`Mish`,
``"mish"``), an initializer (:class:`LecunNormal`, ``"lecun_normal"``), a loss
(:class:`LogCosh`, ``"log_cosh"``) and an optimizer (:class:`Lion`,
``"lion"``). Installing the distribution is enough: the framework finds them
through the ``framework`` entry point declared in ``pyproject.toml``, so
``from framework.layers import FeatureScale`` works without importing this
package.
"""

from framework_example.activations import Mish
from framework_example.initializers import LecunNormal
from framework_example.layers import FeatureScale
from framework_example.losses import LogCosh
from framework_example.optimizers import Lion

__version__ = "0.1.0"
__all__ = ["FeatureScale", "Mish", "LecunNormal", "LogCosh", "Lion", "__version__"]
