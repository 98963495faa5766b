"""Base class of optimizers: in-place updates, clipping, schedules, state."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from framework.base import schedules
from framework.base.config import Configurable
from framework.base.mixed_precision import MASTER_DTYPE, LossScaler, all_finite, needs_master
from framework.base.optimizer_args import check_penalties, rate_and_params
from framework.base.parameter import TRAINABLE_VERSION, Parameter
from framework.errors import ConfigError

__all__ = ["Optimizer"]


class Optimizer(Configurable):
    """Updates parameters in place from their accumulated gradients.

    Subclasses implement ``update(param, grad, state, lr)``, where ``state`` is
    a dict of this parameter's slot arrays (momentum, moments...) that the
    subclass creates on first use and updates in place. The base class handles
    binding to parameters, weight decay (added to the gradient, as PyTorch's
    ``weight_decay`` does; AdamW overrides it), clipping, learning-rate
    schedules, the step count and ``state_dict``.

    Args:
        params: a layer / model or an iterable of ``Parameter``; may be bound
            later with :meth:`bind` (``compile`` does). A number or a schedule
            here is taken as the learning rate, so the Keras spelling
            ``SGD(0.1)`` works too (a rate given twice is a ConfigError).
        learning_rate: a float or a schedule, a callable ``step -> lr`` such
            as :mod:`framework.base.schedules` provides, or its saved
            ``{"class_name": ..., "config": ...}`` form (alias ``lr``).
        weight_decay: L2 penalty coefficient (a finite number >= 0) added to each gradient.
        clipnorm: if set (a number > 0), gradients are rescaled so their global L2 norm is at
            most this value.
        clipvalue: if set, each gradient entry is clipped to
            ``[-clipvalue, clipvalue]``.

    float16 parameters (any dtype narrower than float32) are trained on a
    float32 master copy, decided per parameter at bind: ``update`` sees a
    float32 ``Parameter`` holding the master, every slot it creates is
    float32, the gradient is cast to float32 (and divided by the loss scale)
    before clipping and weight decay, and the parameter receives the master
    rounded after each step. The master is saved as the slot ``"master"``;
    :attr:`loss_scaler` holds the dynamic loss scale (see
    :mod:`framework.base.mixed_precision`). float32 and float64 parameters
    take the plain path, unchanged.

    Attributes:
        loss_scaler: a :class:`~framework.base.mixed_precision.LossScaler` when
            any bound parameter is float16, else ``None``.
    """

    #: Per bound parameter: trained on a float32 master copy (set at bind).
    _masters: tuple[bool, ...] = ()
    #: Whether any bound parameter is, i.e. ``step`` takes the mixed-precision path.
    _mixed = False
    loss_scaler: LossScaler | None = None

    def __init__(
        self,
        params: Any = None,
        learning_rate: float | Callable[[int], float] = 0.01,
        *,
        lr: float | Callable[[int], float] | None = None,
        weight_decay: float = 0.0,
        clipnorm: float | None = None,
        clipvalue: float | None = None,
    ) -> None:
        params, learning_rate = rate_and_params(type(self), params, learning_rate, lr)
        check_penalties(type(self).__name__, weight_decay, clipnorm, clipvalue)
        self.learning_rate = learning_rate
        self.weight_decay = float(weight_decay)
        self.clipnorm = None if clipnorm is None else float(clipnorm)
        self.clipvalue = None if clipvalue is None else float(clipvalue)
        self.iterations = 0
        self.params: list[Parameter] = []
        self.state: list[dict[str, np.ndarray]] = []
        self._scratch: dict[tuple[int, str], np.ndarray] = {}
        self._shadows: dict[int, Parameter] = {}
        self._source: Any = None
        self._trainable_version = TRAINABLE_VERSION[0]
        if params is not None:
            self.bind(params)

    @property
    def learning_rate(self) -> float | Callable[[int], float]:
        """The constant rate or the schedule (a callable ``step -> lr``)."""
        return self._learning_rate

    @learning_rate.setter
    def learning_rate(self, value: Any) -> None:
        value = schedules.get(value)
        if not callable(value):
            if not schedules.is_rate(value):
                raise ConfigError(
                    f"{type(self).__name__}: learning_rate must be a finite number >= 0 "
                    f"or a schedule, got {value!r}"
                )
            value = float(value)
        self._learning_rate = value

    def bind(self, params: Any) -> Optimizer:
        """Attach to the trainable parameters of a layer or an iterable of ``Parameter``."""
        if hasattr(params, "trainable_parameters"):
            found = params.trainable_parameters()
        elif isinstance(params, Iterable) and not isinstance(params, (str, bytes, dict)):
            params = list(params)
            wrong = [p for p in params if not isinstance(p, Parameter)]
            if wrong:
                raise ConfigError(
                    f"{type(self).__name__}.bind: expected a Layer or Parameters, got an iterable "
                    f"holding {type(wrong[0]).__name__} {wrong[0]!r}"
                )
            found = [p for p in params if p.trainable]
        else:
            raise ConfigError(
                f"{type(self).__name__}.bind: expected a Layer or Parameters, got {type(params).__name__}"
            )
        self._source = params if hasattr(params, "trainable_parameters") else None
        # a list of Parameters: kept whole, so one frozen or unfrozen later is dropped or taken up
        self._listed: list[Parameter] | None = None if self._source is not None else list(params)
        self._trainable_version = TRAINABLE_VERSION[0]
        self._scratch = {}
        self._adopt(found)
        return self

    def _adopt(self, found: Iterable[Parameter]) -> None:
        """Hold ``found``, a tied weight once (it is updated once per step).

        Bound again (``compile`` with the same optimizer) or refreshed, a parameter it already held
        keeps its slots and master copy, as Keras's optimizer keeps its variables; the step count goes on.
        """
        kept = {id(p): s for p, s in zip(getattr(self, "params", ()), getattr(self, "state", ()))}
        self.params = list({id(p): p for p in found}.values())
        self.state = [kept.get(id(p), {}) for p in self.params]
        self._configure_precision()

    def _configure_precision(self) -> None:
        """Decide, once per bound parameter, whether it trains on a float32 master copy."""
        self._masters = tuple(needs_master(p) for p in self.params)
        self._mixed = any(self._masters)
        if not self._mixed:
            self.loss_scaler = None
        elif self.loss_scaler is None:
            self.loss_scaler = LossScaler()
        shadows = getattr(self, "_shadows", {})
        keep = {id(p) for p, low in zip(self.params, self._masters) if low}
        self._shadows = {k: v for k, v in shadows.items() if k in keep}

    def refresh(self) -> None:
        """Re-collect the trainable parameters of the bound layer if any was frozen or unfrozen since.

        Keras's rule: ``layer.trainable = False`` takes effect from the next
        step, compiled again or not; for an optimizer bound to a list of
        Parameters, each one's ``trainable`` flag does. A parameter that stays keeps its slots
        (moments); a newly unfrozen one starts with empty slots.
        """
        source = getattr(self, "_source", None)
        listed = getattr(self, "_listed", None)
        unchanged = getattr(self, "_trainable_version", None) == TRAINABLE_VERSION[0]
        self._trainable_version = TRAINABLE_VERSION[0]
        if unchanged or (source is None and listed is None):
            return
        if source is not None:
            self._adopt(source.trainable_parameters())
        else:
            self._adopt([p for p in listed or () if p.trainable])

    @property
    def lr(self) -> float:
        """The rate of the coming step: the schedule at ``iterations``, checked (``schedules.rate_at``)."""
        if callable(self.learning_rate):
            owner = f"{type(self).__name__}: the learning_rate schedule"
            return schedules.rate_at(owner, self.learning_rate, self.iterations)
        return float(self.learning_rate)

    @lr.setter
    def lr(self, value: float | Callable[[int], float]) -> None:
        self.learning_rate = value

    def zero_grad(self) -> None:
        """Mark every gradient as not computed yet (PyTorch's ``set_to_none``).

        A parameter whose gradient no backward then writes is skipped by the
        next :meth:`step`: no momentum, no weight decay, as PyTorch skips a
        ``grad`` of ``None``. Reading ``grad`` gives zeros. A layer unfrozen since
        the last step joins first (:meth:`refresh`), from zero, not its frozen sum.
        """
        self.refresh()
        for p in self.params:
            p.zero_grad(lazy=True)

    def _with_gradients(self) -> list[int]:
        """Indices of the bound parameters that received a gradient since their last (lazy) zeroing."""
        return [i for i, p in enumerate(self.params) if p.pending_grad() is not None]

    def step(self) -> None:
        """Apply one update to every bound parameter that received a gradient, in place.

        With float16 parameters the update runs on float32 master copies: the
        gradients are unscaled by the loss scale the training step set, and an
        overflow skips the step (weights, slots and step count stay).
        """
        if getattr(self, "_trainable_version", None) != TRAINABLE_VERSION[0]:
            self.refresh()
        active = self._with_gradients()  # before anything reads grad (which writes lazy zeros)
        # the scaler whose scale the gradients carry: set by the training step for this step only
        scaler = self.loss_scaler if self._mixed and self.loss_scaler and self.loss_scaler.pending else None
        if scaler is not None:
            scaler.pending = False
            if not all_finite(self.params):
                for p in self.params:
                    p.zero_grad()
                scaler.overflowed()
                return
        inverse = 1.0 if scaler is None else 1.0 / scaler.scale
        params = [self.params[i] for i in active]
        masters = [self._masters[i] for i in active] if self._mixed else [False] * len(params)
        targets: list[Parameter] = []
        grads: list[np.ndarray] = []
        for p, low in zip(params, masters):
            target, grad = p, p.grad
            if low:
                target = self.master(p)
                grad = self.scratch(target, "master_grad")
                np.copyto(grad, p.grad)
            if inverse != 1.0:
                grad *= inverse
            targets.append(target)
            grads.append(grad)
        if self.clipvalue is not None:
            for grad in grads:
                np.clip(grad, -self.clipvalue, self.clipvalue, out=grad)
        if self.clipnorm is not None:
            total = math.sqrt(sum(float(np.vdot(g, g)) for g in grads))
            if total > self.clipnorm:
                factor = self.clipnorm / (total + 1e-12)
                for grad in grads:
                    grad *= factor
        lr = self.lr
        for p, target, grad, i, low in zip(params, targets, grads, active, masters):
            if self.weight_decay and self.decay_in_gradient:
                decayed = self.scratch(target, "decayed_grad")
                np.multiply(target.data, self.weight_decay, out=decayed)
                decayed += grad
                grad = decayed
            self.update(target, grad, self.state[i], lr)
            if low:
                np.copyto(p.data, target.data, casting="same_kind")
        self.iterations += 1
        if scaler is not None:
            scaler.stepped()

    def master(self, param: Parameter) -> Parameter:
        """The float32 ``Parameter`` holding the master copy of a float16 ``param`` (made on first use)."""
        shadow = self._shadows.get(id(param))
        if shadow is None:
            shadow = Parameter(param.data.astype(MASTER_DTYPE))
            self._shadows[id(param)] = shadow
        return shadow

    def slot_dtype(self, param: Parameter) -> np.dtype:
        """The dtype of ``param``'s slots: float32 for a float16 parameter, else the parameter's own."""
        return MASTER_DTYPE if needs_master(param) else param.dtype

    def sync_master_weights(self) -> None:
        """Take a float16 parameter's values as its master where they differ from the master rounded.

        Weights set from outside since the last step (``load_weights``,
        ``EarlyStopping(restore_best_weights=True)``) would otherwise be
        overwritten by the stale master at the next step. ``fit`` calls this
        when it starts; call it after changing weights by hand mid-training.
        """
        for p, low in zip(self.params, self._masters):
            shadow = self._shadows.get(id(p)) if low else None
            if shadow is not None and not np.array_equal(shadow.data.astype(p.dtype), p.data):
                np.copyto(shadow.data, p.data)

    def scratch(self, param: Parameter, name: str = "work") -> np.ndarray:
        """A reusable uninitialised array shaped like ``param`` (not part of the state).

        ``update`` writes temporaries into it with ``out=`` so a step allocates
        no arrays of the parameter's size.
        """
        key = (id(param), name)
        buf = self._scratch.get(key)
        if buf is None or buf.shape != param.shape or buf.dtype != param.dtype:
            buf = np.empty_like(param.data)
            self._scratch[key] = buf
        return buf

    #: ``True``: weight decay is added to the gradient (L2); AdamW sets ``False``.
    decay_in_gradient = True

    def update(self, param: Parameter, grad: np.ndarray, state: dict[str, np.ndarray], lr: float) -> None:
        raise NotImplementedError(f"{type(self).__name__} does not implement update()")

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {"learning_rate": schedules.serialize(self.learning_rate)}
        if self.weight_decay:
            config["weight_decay"] = self.weight_decay
        if self.clipnorm is not None:
            config["clipnorm"] = self.clipnorm
        if self.clipvalue is not None:
            config["clipvalue"] = self.clipvalue
        return config

    def slot_names(self) -> frozenset[str] | None:
        """The slots every stepped parameter holds with these settings; ``None`` when not declared.

        A checkpoint's slots are checked against it on load (a missing or an
        unknown one is refused). An optimizer of one's own may leave it ``None``.
        """
        return None

    def state_dict(self) -> dict[str, Any]:
        """``{"iterations": n, "slots": [{slot name: array} per bound parameter]}``.

        A float16 parameter's slots are float32 and include its master copy,
        ``"master"``; with such parameters the dict also holds
        ``"loss_scale": {"scale": s, "good_steps": k}``. The arrays are
        copies, so later steps do not change a saved state.
        """
        slots = []
        for p, s in zip(self.params, self.state):
            saved = {k: np.array(v, copy=True) for k, v in s.items()}
            shadow = self._shadows.get(id(p))
            if shadow is not None:
                saved["master"] = np.array(shadow.data, copy=True)
            slots.append(saved)
        state: dict[str, Any] = {"iterations": self.iterations, "slots": slots}
        if self.loss_scaler is not None:
            state["loss_scale"] = self.loss_scaler.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the step count, slot arrays (copied) and loss scale for the bound parameters.

        Slots are cast to :meth:`slot_dtype` (float32 for a float16
        parameter); a ``"master"`` slot becomes the parameter's master copy.
        """
        owner = f"{type(self).__name__}.load_state_dict"
        slots = state.get("slots", []) if isinstance(state, dict) else None
        if not isinstance(slots, (list, tuple)) or not all(isinstance(s, dict) for s in slots):
            raise ConfigError(
                f"{owner}: expected a dict {{'iterations': n, 'slots': [a dict of arrays per parameter]}} "
                f"as state_dict() returns, got {state!r:.80}"
            )
        iterations = schedules.check_step_count(f"{owner}: iterations", state.get("iterations", 0))
        if len(slots) != len(self.params):
            raise ConfigError(
                f"{owner}: state has {len(slots)} parameter slots, "
                f"the optimizer is bound to {len(self.params)} parameters"
            )
        for i, (p, saved) in enumerate(zip(self.params, slots)):
            for key, value in saved.items():
                value = np.asarray(value)
                if value.dtype.kind not in "biuf" or (value.shape != p.shape and value.ndim != 0):
                    raise ConfigError(
                        f"{owner}: slot {key!r} of parameter {i} must be a number or a numeric array "
                        f"of the parameter's shape {p.shape}, got shape {value.shape}, dtype {value.dtype}"
                    )
        if self.loss_scaler is not None and "loss_scale" in state:
            self.loss_scaler.load_state_dict(state["loss_scale"])
        self.iterations = iterations
        self.state = []
        self._shadows = {}
        for p, saved in zip(self.params, slots):
            low = needs_master(p)
            dtype = MASTER_DTYPE if low else p.dtype
            restored = {k: np.array(v, dtype=dtype) for k, v in saved.items() if k != "master"}
            if low and "master" in saved:
                self._shadows[id(p)] = Parameter(np.array(saved["master"], dtype=MASTER_DTYPE))
            self.state.append(restored)
