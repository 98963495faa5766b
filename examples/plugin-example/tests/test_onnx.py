"""The plugin's ONNX converter: an exported FeatureScale runs in onnxruntime like ``predict``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from framework_example import FeatureScale

from framework import Input, Sequential

pytest.importorskip("onnx", reason="the framework's [onnx] extra is not installed")
ort = pytest.importorskip("onnxruntime", reason="the framework's [onnx] extra is not installed")


@pytest.mark.parametrize("shape", [(3,), (3, 4, 5)])
def test_feature_scale_exports(shape: tuple[int, ...], tmp_path: Path) -> None:
    import framework.onnx

    layer = FeatureScale()
    model = Sequential([Input(shape), layer])
    layer.gamma.data[:] = np.arange(1, 4)
    path = tmp_path / "scale.onnx"
    framework.onnx.export(model, path)
    x = np.random.default_rng(0).normal(size=(7, *shape)).astype(np.float32)
    got = ort.InferenceSession(str(path)).run(None, {"input": x})[0]
    np.testing.assert_allclose(got, model.predict(x), rtol=1e-6)
