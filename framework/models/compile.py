"""``compile``: resolving a model's optimizer, losses and metrics by name.

For several outputs, as in Keras: ``loss`` is one loss for every output, a
list or a dict keyed by output name, where ``None`` leaves an output without
a loss (it adds nothing and sends back no gradient; at least one output needs
a loss); ``loss_weights`` is a list or a dict (outputs left out weigh 1);
``metrics`` is a flat list applied to every output (Keras 2's rule), a list
with one entry (a metric, a list or ``None``) per output, or a dict. One
metric instance given for several outputs is copied, so each keeps its own
state. Log keys that would repeat are refused
(:func:`framework.training.named.log_keys`).

Besides resolving, compile checks the pairing of the model's last layer and
its loss (a softmax output with a loss that expects logits, or the reverse,
warns once) and tells each metric what the model outputs (logits or
probabilities), so ``accuracy`` thresholds at the right place.
"""

from __future__ import annotations

import copy
import math
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

from framework.base.config import takes_name
from framework.base.loss import check_output_pairing
from framework.errors import ConfigError, NotCompiledError
from framework.registry.namespace import serialize
from framework.training.named import log_keys, repeated

if TYPE_CHECKING:
    from framework.models.model import Model

__all__ = ["compile_model", "per_output"]


def compile_model(
    model: Model,
    optimizer: Any = "sgd",
    loss: Any = None,
    metrics: Any = None,
    loss_weights: Any = None,
    weighted_metrics: Any = None,
) -> None:
    """``model.compile(...)``: resolve and store the optimizer, losses and metrics (see ``Model.compile``)."""
    from framework import losses as losses_ns
    from framework import metrics as metrics_ns
    from framework import optimizers as optimizers_ns

    if loss is None:
        raise ConfigError(f"{model.describe()}.compile: a loss is required, e.g. loss='mse'")
    names = model.output_names
    n_out = len(names)
    opt = optimizers_ns.get(optimizer)
    if not hasattr(opt, "step") or not hasattr(opt, "bind"):
        raise ConfigError(f"compile: optimizer must be an Optimizer, got {type(opt).__name__}")

    losses: list[Any] = []
    seen: set[int] = set()
    for spec in per_output("loss", loss, names, single_is_shared=True):
        item = None if spec is None else losses_ns.get(spec)
        if item is not None and (not hasattr(item, "forward") or not hasattr(item, "backward")):
            raise ConfigError(f"compile: loss must be a Loss, got {type(item).__name__}")
        losses.append(copy.deepcopy(item) if id(item) in seen else item)
        if item is not None:
            seen.add(id(item))
    if all(item is None for item in losses):
        raise ConfigError(
            f"{model.describe()}.compile: at least one output needs a loss; got None for every output {names}"
        )
    weights = _loss_weights(loss_weights, names)

    slots: list[tuple[int, Any, str]] = []
    seen = set()
    for weighted, given in ((False, metrics), (True, weighted_metrics)):
        for k, specs in enumerate(_metric_specs(given, names)):
            for spec in specs:
                metric = metrics_ns.get(spec)
                _check_metric(spec, metric)
                if id(metric) in seen:  # one instance given twice: each use gets its own state
                    metric = copy.deepcopy(metric)
                seen.add(id(metric))
                if isinstance(spec, str) and getattr(metric, "_name", True) is None:
                    metric._name = spec  # as Keras: "acc" logs as acc, "MAE" as MAE
                # Keras: sample and class weights reach the weighted_metrics only
                metric.sample_weighted = weighted
                if weighted and any(m.name == metric.name and kk == k for kk, m, _ in slots):
                    _rename(metric, f"weighted_{metric.name}")  # in both lists: Keras's prefix
                key = metric.name if n_out == 1 else f"{names[k]}_{metric.name}"
                slots.append((k, metric, key))
    log_keys(model, slots)  # refuses metric keys that repeat, or hide a loss

    model.optimizer = opt
    model._fused_output = _pair_outputs(model, losses, slots)
    model._losses = losses
    model.loss = losses[0] if n_out == 1 else list(losses)
    model._loss_weights = weights
    model._metric_slots = slots
    model.metrics = [m for _, m, _ in slots]
    model.compiled = True
    # The optimizer is serialised when a config is asked for (compile_config), not here: its rate
    # may change since, and a plain-function schedule trains though it cannot be saved.
    model._compile_cfg = {
        "loss": serialize("losses", losses[0])
        if n_out == 1
        else [None if x is None else serialize("losses", x) for x in losses],
        "metrics": _saved_metrics(slots, n_out, weighted=False),
        "weighted_metrics": _saved_metrics(slots, n_out, weighted=True),
        "loss_weights": None if loss_weights is None else weights,
    }
    if model.parameters():
        opt.bind(model)


def _saved_metrics(slots: list[tuple[int, Any, str]], n_out: int, weighted: bool) -> list[Any]:
    """The compiled metrics (or weighted metrics) as JSON data: a list, or one list per output."""
    per_output = [
        [_saved_metric(m) for k2, m, _ in slots if k2 == k and m.sample_weighted == weighted]
        for k in range(n_out)
    ]
    return per_output[0] if n_out == 1 else per_output


def _saved_metric(metric: Any) -> Any:
    """``serialize("metrics", metric)`` with the name it was given, which is its log key (the
    registry's serialisation leaves names out: an activation's does not matter, a metric's does)."""
    saved = serialize("metrics", metric)
    name = getattr(metric, "_name", None)
    if not name or hasattr(metric, "serialized_name") or not isinstance(saved, (str, dict)):
        return saved  # a function metric is saved by its function's name (resolved by custom_objects)
    if not takes_name(type(metric), unreadable=False):
        return saved  # its constructor cannot take the name: the rebuild names it (weighted_ prefix)
    if isinstance(saved, str):
        return {"class_name": saved, "config": {"name": name}}
    return {**saved, "config": {**saved.get("config", {}), "name": name}}


def _rename(metric: Any, name: str) -> None:
    """Give ``metric`` the log name ``name`` (a :class:`~framework.base.metric.Metric` keeps it in its
    config, so a saved model logs the same keys)."""
    if hasattr(metric, "_name"):
        metric._name = name
    else:
        raise ConfigError(
            f"compile: {type(metric).__name__} {metric.name!r} is in both metrics and weighted_metrics; "
            "give one of them another name"
        )


def _check_metric(spec: Any, metric: Any) -> None:
    """Refuse what ``metrics.get`` passed through but is no metric (``metrics=[3]``)."""
    updates = callable(getattr(metric, "update", None)) or callable(getattr(metric, "update_state", None))
    if not (updates and callable(getattr(metric, "result", None)) and hasattr(metric, "name")):
        raise ConfigError(
            f"compile: each metric must be a registered name, a Metric class or instance, or a function "
            f"fn(y_true, y_pred); got {spec!r} ({type(spec).__name__})"
        )


def compile_config(model: Model) -> dict[str, Any]:
    """``compile``'s arguments as JSON data (optimizer, loss and metrics serialised).

    The optimizer is serialised as it is now, so a rate set since ``compile``
    (by hand, by ``ReduceLROnPlateau``) is what a checkpoint keeps.
    """
    if not model.compiled or model._compile_cfg is None:
        raise NotCompiledError(f"{model.describe()} is not compiled; call compile() first")
    config = copy.deepcopy(model._compile_cfg)
    return {"optimizer": serialize("optimizers", model.optimizer), **config}


def compile_from_config(model: Model, config: dict[str, Any]) -> None:
    """Compile ``model`` from :func:`compile_config`'s output."""
    if not isinstance(config, dict) or "loss" not in config:
        raise ConfigError(f"compile_from_config: expected a dict with 'optimizer' and 'loss', got {config!r}")
    model.compile(
        optimizer=config.get("optimizer", "sgd"),
        loss=config["loss"],
        metrics=config.get("metrics") or None,
        loss_weights=config.get("loss_weights"),
        weighted_metrics=_any_metric(config.get("weighted_metrics")),
    )


def _any_metric(specs: Any) -> Any:
    """``specs`` (a saved metrics list, or one list per output), or ``None`` when it names none."""
    if isinstance(specs, list) and all(isinstance(s, list) and not s for s in specs):
        return None
    return specs or None


def _loss_weights(loss_weights: Any, names: list[str]) -> list[float]:
    """One finite float per output; a dict may leave outputs out (weight 1, as in Keras 2)."""
    if loss_weights is None:
        return [1.0] * len(names)
    values = per_output("loss_weights", loss_weights, names, False)
    if isinstance(loss_weights, dict):
        values = [loss_weights.get(name, 1.0) for name in names]
    weights = []
    for name, w in zip(names, values):
        number = isinstance(w, (int, float, np.integer, np.floating)) and not isinstance(w, (bool, np.bool_))
        if not number or not math.isfinite(float(w)):
            raise ConfigError(
                f"compile: loss_weights for the output {name!r} must be a finite number, got {w!r}"
            )
        weights.append(float(w))
    return weights


def _metric_specs(metrics: Any, names: list[str]) -> list[list[Any]]:
    """The metrics of each output, from a flat list (every output), a list per output, or a dict.

    For several outputs a list holding a list or ``None`` is one entry per
    output (Keras 3's form); a list of names alone applies to every output.
    """
    if metrics is None:
        return [[] for _ in names]
    per_list = isinstance(metrics, (list, tuple)) and bool(metrics)
    if isinstance(metrics, dict) or (
        per_list
        and (
            all(isinstance(m, (list, tuple)) for m in metrics)
            or (len(names) > 1 and any(m is None or isinstance(m, (list, tuple)) for m in metrics))
        )
    ):
        specs = per_output("metrics", metrics if isinstance(metrics, dict) else list(metrics), names, False)
    else:
        specs = [list(metrics) if isinstance(metrics, (list, tuple)) else [metrics]] * len(names)
    return [
        [m for m in (spec if isinstance(spec, (list, tuple)) else [spec]) if m is not None] for spec in specs
    ]


def per_output(label: str, spec: Any, names: list[str], single_is_shared: bool) -> list[Any]:
    """``spec`` as one entry per output: a dict keyed by output name, a list, or one value for all.

    Raises:
        ConfigError: unknown or (for ``loss``) missing dict keys, a list of
            another length, a single value where it cannot be shared, or a
            dict for outputs that share a name.
    """
    n = len(names)
    if isinstance(spec, dict) and not ("class_name" in spec and label == "loss"):
        if repeated(names):
            raise ConfigError(
                f"compile: the outputs {names} share the names {repeated(names)}, so a {label} dict "
                "cannot tell them apart: pass a list in the outputs' order"
            )
        unknown = sorted(set(spec) - set(names))
        missing = [name for name in names if name not in spec]
        if unknown or (missing and label == "loss"):
            raise ConfigError(
                f"compile: {label} keys must be the output names {names}; "
                f"unknown {unknown}, missing {missing}"
            )
        return [spec.get(name) for name in names]
    if isinstance(spec, (list, tuple)):
        if len(spec) != n:
            raise ConfigError(f"compile: {label} has {len(spec)} entries, the model has {n} outputs {names}")
        return list(spec)
    if n > 1 and not single_is_shared:
        raise ConfigError(f"compile: {label} must be a list or dict for a model of {n} outputs {names}")
    return [spec] * n


def _output_layers(model: Model) -> list[Any]:
    """The layer producing each output (``None`` for a hand-written ``forward``)."""
    graph = getattr(model, "_graph", None)
    if graph is not None:
        return [t.node.layer for t in graph.outputs]
    order = getattr(model, "_order", None)
    if order is not None:
        layers = order()
        return [layers[-1] if layers else None]
    return [None] * len(model.output_names)


def _link_of(layer: Any) -> tuple[str | None, bool]:
    """``(link, standalone)``: the activation a layer's output passes through, and whether the
    layer is that activation itself (then its backward can be skipped for the fused gradient)."""
    if layer is None:
        return None, False
    link = getattr(layer, "link", None)
    if link is not None:
        return link, True
    sub = getattr(layer, "_order", None)  # a nested Sequential: its last layer
    if sub is not None and sub():
        return _link_of(sub()[-1])[0], False
    return getattr(getattr(layer, "activation", None), "link", None), False


def _pair_outputs(model: Model, losses: list[Any], slots: list[tuple[int, Any, str]]) -> bool:
    """Warn about a mismatched activation and loss, bind metrics, and say whether to fuse.

    Returns ``True`` when the model has one output, produced by a standalone
    softmax / sigmoid layer, and its loss expects that activation's
    probabilities: ``fit`` then takes the loss's ``backward_logits()`` (the
    stable fused gradient, ``(p - y) / N``) and skips that layer's backward.
    """
    fused = False
    for k, (loss, layer) in enumerate(zip(losses, _output_layers(model))):
        if loss is None:
            continue
        link, standalone = _link_of(layer)
        pairing = link if link in ("softmax", "sigmoid") else None
        where = layer.describe() if layer is not None else f"output {k} of {model.describe()}"
        message = check_output_pairing(loss, pairing, where)
        if message is not None:
            warnings.warn(message, UserWarning, stacklevel=4)
        if (
            len(losses) == 1
            and standalone
            and getattr(loss, "expects", None) == "probabilities"
            and getattr(loss, "link", None) == link
            and hasattr(loss, "backward_logits")
        ):
            fused = True
    for k, metric, _ in slots:
        bind = getattr(metric, "bind_output", None)
        if bind is not None:
            bind(getattr(losses[k], "expects", None), getattr(losses[k], "link", None))
    return fused
