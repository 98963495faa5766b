"""A model as JSON data and back: layer configs by registered name, graph wiring, tied weights.

``serialize_model`` / ``deserialize_model`` are what checkpoints store and read.
A functional graph's config lists each distinct layer once with the calls made
of it (``inbound_nodes``: one entry per call, Keras's layout), so a shared
layer is rebuilt once and called again; a call pinned to a mode
(``layer(x, training=True)``) records it as ``"training"``. A ``Parameter``
held by two layers (tied weights) is recorded under ``tied`` and tied again
on rebuild.
"""

from __future__ import annotations

from typing import Any

from framework.base.layer import Layer
from framework.base.parameter import Parameter
from framework.errors import ConfigError
from framework.models.executor import GraphExecutor
from framework.models.graph import Input, InputLayer, SymbolicTensor
from framework.models.model import Model
from framework.models.rebuild import check_rebuildable, rebuild, set_trainable_flags, trainable_flags
from framework.models.sequential import Sequential
from framework.registry.manager import REGISTRY

__all__ = [
    "deserialize_model",
    "graph_config",
    "rebuild_graph",
    "serialize_model",
    "functional_from_config",
    "tie_parameters",
    "ties_of",
    "tied_parameters",
]


def _check_no_cross_sharing(graph: GraphExecutor, owner: str) -> None:
    """Refuse a layer that is both a node of this graph (or of one nested model) and inside a nested model.

    A nested model's config holds its layers by value, so such a layer would be rebuilt twice, its
    sharing lost (and its weights, written once, missing at one of the two places on load).
    """
    where: dict[int, str] = {}
    for name, layer in graph.layers.items():
        places = [(layer, repr(owner))]
        if isinstance(layer, Model):
            places = [(inner, f"the nested model {name!r}") for inner in layer.modules()[1:]]
        for found, place in places:
            other = where.setdefault(id(found), place)
            if other != place:
                raise ConfigError(
                    f"{found.describe()} is used both in {other} and in {place}: a nested model's "
                    "config holds its layers by value, so this sharing cannot be saved or rebuilt (it "
                    "would become two layers). Keep the layer in one model, or save the weights alone "
                    "(save_weights) and build the model in code"
                )


def graph_config(graph: GraphExecutor, owner: str = "the model") -> dict[str, Any]:
    """The wiring of a functional graph as JSON data (see the module docstring).

    Raises:
        ConfigError: a layer of this graph is also inside a nested model (see the message).
    """
    _check_no_cross_sharing(graph, owner)
    names = {id(layer): name for name, layer in graph.layers.items()}
    call_index: dict[int, int] = {}
    node_index: dict[int, int] = {}
    for node in graph.nodes:
        node_index[id(node)] = call_index.get(id(node.layer), 0)
        call_index[id(node.layer)] = node_index[id(node)] + 1

    def ref(t: SymbolicTensor) -> list[Any]:
        return [names[id(t.node.layer)], node_index[id(t.node)], t.index]

    position = {id(node): k for k, node in enumerate(graph.nodes)}
    entries: dict[int, dict[str, Any]] = {}
    for node in graph.nodes:
        key = id(node.layer)
        if key not in entries:
            name = names[key]
            entries[key] = {"name": name, **serialize_layer(node.layer, name), "inbound_nodes": []}
        if isinstance(node.layer, InputLayer):
            continue
        call: dict[str, Any] = {"args": [ref(t) for t in node.inputs], "list_input": node.list_input}
        call["order"] = position[id(node)]  # the run order, which the rebuild replays
        side = dict(node.side)  # placeholders: a reference, in the args' place a null
        if node.args:
            call["extra_args"] = [None if i in side else a for i, a in enumerate(node.args)]
        if any(k not in side for k in node.kwargs):
            call["kwargs"] = {k: v for k, v in node.kwargs.items() if k not in side}
        if side:
            call["placeholders"] = {str(k): ref(t) for k, t in side.items()}
        if getattr(node, "training", None) is not None:  # pinned by layer(x, training=...)
            call["training"] = node.training
        entries[key]["inbound_nodes"].append(call)
    return {
        "layers": list(entries.values()),
        "input_layers": [ref(t) for t in graph.inputs],
        "output_layers": [ref(t) for t in graph.outputs],
        "multi_input": graph.multi_in,
        "multi_output": graph.multi_out,
    }


def rebuild_graph(config: dict[str, Any]) -> tuple[Any, Any]:
    """``(inputs, outputs)`` placeholders rebuilt from :func:`graph_config`'s output.

    Calls are replayed in their saved ``order`` (the order the model ran them,
    which it runs them in again), else as soon as their inputs exist, so a layer
    whose later call consumes the output of a layer listed after it (an unrolled
    cell) is rebuilt in any listing order.
    """
    tensors: dict[tuple[str, int, int], SymbolicTensor] = {}
    pending: list[tuple[str, Layer, int, dict[str, Any]]] = []
    for entry in config["layers"]:
        name = entry["name"]
        if entry["class_name"] == "InputLayer":
            cfg = dict(entry.get("config") or {})
            tensors[(name, 0, 0)] = Input(cfg.get("shape"), cfg.get("dtype"), name=cfg.get("name", name))
            continue
        layer = deserialize_layer(entry)
        calls = entry.get("inbound_nodes") or []
        if not isinstance(calls, list):
            raise ConfigError(
                f"model config: layer {name!r} has inbound_nodes of type {type(calls).__name__}"
            )
        pending.extend((name, layer, i, call) for i, call in enumerate(calls))
    if all(isinstance(call, dict) and type(call.get("order")) is int for _, _, _, call in pending):
        pending.sort(key=lambda item: item[3]["order"])
    done: set[tuple[str, int]] = set()
    while pending:
        progressed = False
        for item in list(pending):
            name, layer, index, call = item
            previous_done = index == 0 or (name, index - 1) in done
            refs = call.get("args") if isinstance(call, dict) else None
            if not isinstance(refs, list):
                raise ConfigError(f"model config: call {index} of layer {name!r} has no list of args")
            keys = [tuple(a) if isinstance(a, list) else None for a in refs]
            side = {
                k: tuple(r) if isinstance(r, list) else None for k, r in call.get("placeholders", {}).items()
            }
            if not previous_done or any(k not in tensors for k in [*keys, *side.values()]):
                continue
            args = [tensors[k] for k in keys]  # type: ignore[index]
            arg = args if call.get("list_input") else args[0]
            extra = list(call.get("extra_args", []))
            options = {"training": call.get("training"), **call.get("kwargs", {})}
            for key, r in side.items():  # placeholders passed as call arguments (masks)
                if key.isdigit() and int(key) < len(extra):
                    extra[int(key)] = tensors[r]  # type: ignore[index]
                else:
                    options[key] = tensors[r]  # type: ignore[index]
            out = layer(arg, *extra, **options)
            for i, o in enumerate(out if isinstance(out, list) else [out]):
                tensors[(name, index, i)] = o
            done.add((name, index))
            pending.remove(item)
            progressed = True
        if not progressed:
            name, _, index, call = pending[0]
            refs = [*call.get("args", []), *call.get("placeholders", {}).values()]
            unknown = [r for r in refs if not isinstance(r, list) or tuple(r) not in tensors] or refs
            raise ConfigError(
                f"model config: layer {name!r} (call {index}) is called on unknown tensors {unknown}"
            )

    def pick(key: str) -> list[SymbolicTensor]:
        try:
            return [tensors[tuple(ref)] for ref in config[key]]
        except (KeyError, TypeError) as exc:
            raise ConfigError(f"model config: {key} names an unknown tensor {exc}") from exc

    inputs, outputs = pick("input_layers"), pick("output_layers")
    return (
        inputs if config.get("multi_input", len(inputs) > 1) else inputs[0],
        outputs if config.get("multi_output", len(outputs) > 1) else outputs[0],
    )


def _holders(model: Layer) -> dict[str, tuple[Layer, str, Parameter]]:
    """Every ``Parameter`` attribute of the layer tree by dotted name, each layer visited once."""
    found: dict[str, tuple[Layer, str, Parameter]] = {}
    seen: set[int] = set()

    def visit(prefix: str, layer: Layer) -> None:
        if id(layer) in seen:
            return
        seen.add(id(layer))
        for key, value in vars(layer).items():
            if isinstance(value, Parameter):
                found[prefix + key] = (layer, key, value)
        for name, child in layer.named_children():
            visit(f"{prefix}{name}.", child)

    visit("", model)
    return found


def tied_parameters(model: Layer) -> list[list[str]]:
    """``[[name, other name, ...], ...]``: dotted names that hold one shared ``Parameter``.

    The first name of a group is the one ``named_parameters`` (and so the
    checkpoint) uses.
    """
    canonical = {id(p): name for name, p in model.named_parameters()}
    by_id: dict[int, list[str]] = {}
    for name, (_, _, param) in _holders(model).items():
        by_id.setdefault(id(param), []).append(name)
    groups = []
    for pid, names in by_id.items():
        if len(names) > 1:
            first = canonical.get(pid, names[0])
            groups.append([first, *sorted(n for n in names if n != first)])
    return sorted(groups)


def functional_from_config(cls: type[Model], config: dict[str, Any]) -> Model:
    """A functional ``cls`` (``Model`` or a subclass) rebuilt from its ``get_config``, ties included."""
    inputs, outputs = rebuild_graph(config)
    model = cls(inputs, outputs, name=config.get("name"))
    tie_parameters(model, config.get("tied"))
    return model


def ties_of(model: Layer) -> dict[str, list[list[str]]]:
    """``{"tied": tied_parameters(model)}`` for a config, or ``{}`` when no parameter is shared."""
    tied = tied_parameters(model)
    return {"tied": tied} if tied else {}


def tie_parameters(model: Layer, groups: Any) -> None:
    """Make every name of each group hold the ``Parameter`` of the group's first name."""
    if not groups:
        return
    if not isinstance(groups, list):
        raise ConfigError(f"model config: tied must be a list of lists of names, got {type(groups).__name__}")
    holders = _holders(model)
    for group in groups:
        if not isinstance(group, list) or len(group) < 2 or not all(isinstance(n, str) for n in group):
            raise ConfigError(f"model config: each tied group must list two or more names, got {group!r}")
        unknown = [n for n in group if n not in holders]
        if unknown:
            raise ConfigError(f"model config: tied names {unknown} name no parameter of the model")
        source = holders[group[0]][2]
        for name in group[1:]:
            owner, attr, current = holders[name]
            if current.shape != source.shape:
                raise ConfigError(
                    f"model config: cannot tie {name} {current.shape} to {group[0]} {source.shape}: "
                    "shapes differ"
                )
            object.__setattr__(owner, attr, source)


def serialize_layer(layer: Layer, name: str) -> dict[str, Any]:
    if isinstance(layer, InputLayer):
        return {"class_name": "InputLayer", "config": layer.get_config()}
    if isinstance(layer, Model):
        data = serialize_model(layer)
        data["config"] = (
            {**data["config"], "name": name} if isinstance(data["config"], dict) else data["config"]
        )
        return {**data, "is_model": True, **({} if layer.trainable else {"trainable": False})}
    registered = REGISTRY.name_of("layers", layer)
    if registered is None:
        raise ConfigError(
            f"{layer.describe()}: class {type(layer).__name__} is not registered, so the model cannot "
            "be serialised; register it with a register_layers hook (see framework.registry.hookspecs)"
        )
    config = dict(layer.get_config())
    check_rebuildable(layer, config)
    config["name"] = name
    entry: dict[str, Any] = {"class_name": registered, "config": config}
    if not layer.trainable:
        entry["trainable"] = False
    inner = {k: v for k, v in trainable_flags(layer).items() if k}  # layers its constructor makes
    if inner:
        entry["layer_trainable"] = inner
    return entry


def deserialize_layer(entry: dict[str, Any]) -> Layer:
    if entry.get("is_model"):
        model = deserialize_model(entry)
        if entry.get("trainable", True) is False and "" not in (entry.get("layer_trainable") or {}):
            model.trainable = False
        return model
    layer = rebuild(entry["class_name"], entry.get("config") or {})
    if not isinstance(layer, Layer):
        raise ConfigError(f"model config: {entry['class_name']!r} did not rebuild a Layer")
    trainable = entry.get("trainable", True)
    if not isinstance(trainable, bool):
        raise ConfigError(f"model config: layer {entry['class_name']!r} has trainable={trainable!r}")
    if not trainable:
        layer.trainable = False
    set_trainable_flags(layer, entry.get("layer_trainable"))
    return layer


def serialize_model(model: Model) -> dict[str, Any]:
    """``{"class_name": ..., "config": ..., "build_input_shape": ...}`` as JSON data.

    ``class_name`` is ``"Sequential"``, ``"Model"`` (a functional graph) or the
    registered name of a Model subclass.
    """
    if not isinstance(model, Model):
        raise ConfigError(f"serialize_model: expected a Model, got {type(model).__name__}")
    class_name: str | None
    if isinstance(model, Sequential) and type(model).get_config is Sequential.get_config:
        class_name = "Sequential"
    elif model._graph is not None and type(model).get_config is Model.get_config:
        class_name = "Model"
    else:
        class_name = REGISTRY.name_of("layers", model)
        if class_name is None:
            raise ConfigError(
                f"{model.describe()}: the Model subclass {type(model).__name__} is not registered; "
                "register it with a register_layers hook so it can be rebuilt by name"
            )
    shape = model.input_shape
    if isinstance(shape, list):
        shape = [list(s) for s in shape]
    elif shape is not None:
        shape = list(shape)
    config = model.get_config()
    data = {"class_name": class_name, "config": config, "build_input_shape": shape}
    if class_name not in ("Sequential", "Model"):  # a subclass: its constructor makes the layers
        check_rebuildable(model, config)
        flags = trainable_flags(model)
        if flags:
            data["layer_trainable"] = flags
    tied = tied_parameters(model)
    if tied:
        data["tied"] = tied
    return data


def deserialize_model(data: dict[str, Any]) -> Model:
    """Rebuild an un-compiled, built model from :func:`serialize_model`'s output."""
    if not isinstance(data, dict) or "class_name" not in data:
        raise ConfigError(f"deserialize_model: expected a dict with 'class_name' and 'config', got {data!r}")
    class_name, config = data["class_name"], data.get("config") or {}
    if class_name == "Sequential":
        model: Any = Sequential.from_config(config)
    elif class_name in ("Model", "Functional"):
        model = Model.from_config(config)
    else:
        model = rebuild(class_name, config)
        if not isinstance(model, Model):
            raise ConfigError(f"deserialize_model: {class_name!r} is not a Model subclass")
    shape = data.get("build_input_shape")
    if shape is not None and not model.built:
        model.build([tuple(s) for s in shape] if shape and isinstance(shape[0], list) else tuple(shape))
    elif shape is not None and model._graph is None and not isinstance(model, Sequential):
        if not all(child.built for child in model.children()):
            model.build(tuple(shape))
    tie_parameters(model, data.get("tied"))
    set_trainable_flags(model, data.get("layer_trainable"))
    return model
