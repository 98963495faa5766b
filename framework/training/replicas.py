"""Data parallelism over threads in one process: what ``fit(threads=K)`` runs each batch on.

Each batch is cut into ``K`` shards of consecutive samples. Shard 0 runs on
the calling thread through the model itself; shard ``k`` on a worker thread
through a replica, a copy of the model whose parameters and buffers are the
model's own arrays (only its gradients are its own). NumPy releases the GIL
inside its array operations, so the shards run on separate cores. NumPy's
BLAS is held to one thread meanwhile: OpenBLAS keeps its own worker threads
spinning for about 0.1 s after every product, and they would take the very
cores the shards run on.

What one thread would compute is kept:

- the loss, its weights and the metrics see the whole batch: the shards'
  outputs are joined and the loss is taken in the calling thread, and its
  gradient is cut into the same shards for the backward passes;
- the replicas' parameter gradients are added into the model's before the
  optimizer step;
- BatchNorm normalises each shard with the statistics of the whole batch
  (:mod:`framework.runtime.threads`) and updates its running estimates once.

Results equal one thread's up to the order of floating-point sums. Dropout is
the exception: each worker thread draws its masks from its own generator,
derived at each epoch's start from the state of the framework's global one
(or of a seeded layer's own), the shard and the epoch, without drawing from
it. So a seeded run repeats with the same ``K``, and a run resumed from a
checkpoint continues as the uninterrupted one did, but the masks are not one
thread's.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np

from framework.base.context import Context
from framework.base.layer import Layer
from framework.errors import ConfigError
from framework.runtime import blas
from framework.runtime.random import get_rng, thread_rng
from framework.runtime.threads import GroupAborted, ThreadGroup, member_of
from framework.training.batch_axis import mismatch, rows
from framework.training.batching import full_batch_layer

if TYPE_CHECKING:
    from framework.models.model import Model

__all__ = ["Replicas", "make_replicas"]


def _batch_size(x: Any) -> int:
    first = next(iter(x.values())) if isinstance(x, dict) else x[0] if isinstance(x, (list, tuple)) else x
    return len(first)


def _join(parts: list[Any]) -> Any:
    if isinstance(parts[0], (list, tuple)):
        return [np.concatenate(column) for column in zip(*parts)]
    return np.concatenate(parts)


def _fingerprint(state: Any) -> bytes:
    """A generator's ``bit_generator.state`` (dicts of numbers, strings and arrays) as bytes."""
    if isinstance(state, dict):
        return (
            b"{"
            + b",".join(repr(k).encode() + b":" + _fingerprint(v) for k, v in sorted(state.items()))
            + b"}"
        )
    if isinstance(state, (list, tuple)):
        return b"[" + b",".join(_fingerprint(v) for v in state) + b"]"
    if isinstance(state, np.ndarray):
        return state.dtype.str.encode() + repr(state.shape).encode() + state.tobytes()
    return repr(state).encode()


def _derive(state: Any, salt: tuple[int, ...]) -> np.random.Generator:
    """A new generator determined by a generator's ``bit_generator.state`` and ``salt``.

    A function of the state, which checkpoints save, and not of the seed sequence's spawn count,
    which they do not: a run resumed from a checkpoint derives the generators the uninterrupted
    run derived at that epoch.
    """
    digest = hashlib.sha256(_fingerprint(state)).digest()
    entropy = int.from_bytes(digest[:16], "little")
    return np.random.default_rng(np.random.SeedSequence(entropy, spawn_key=salt))


def _generator_states(model: Layer) -> dict[tuple[int, str], Any]:
    """``{(id(layer), attribute): bit_generator.state}`` of every generator a layer of ``model`` holds."""
    return {
        (id(layer), key): value.bit_generator.state
        for layer in model.modules()
        for key, value in vars(layer).items()
        if isinstance(value, np.random.Generator)
    }


def _reseed(
    original: Layer, replica: Layer, salt: tuple[int, ...], states: dict[tuple[int, str], Any]
) -> None:
    """Give every generator a layer holds (a seeded Dropout's) a new one in ``replica``.

    Derived from the original's state at the epoch's start (``states``; its current state for a
    generator made since), so a seeded run repeats; left as copies, the replica would draw the
    same masks as the model.
    """
    for key, value in vars(original).items():
        if isinstance(value, np.random.Generator):
            state = states.get((id(original), key), value.bit_generator.state)
            setattr(replica, key, _derive(state, salt))
    for mine, theirs in zip(original.children(), replica.children()):
        _reseed(mine, theirs, salt, states)


#: the attribute values _follow copies from the model's layers into the replicas'
_PLAIN = (bool, int, float, complex, str, bytes, type(None), np.generic)
_MISSING = object()


def _uncopyable(model: Layer) -> str | None:
    """The description of the innermost layer under ``model`` that ``copy.deepcopy`` refuses."""
    for child in model.children():
        inner = _uncopyable(child)
        if inner is not None:
            return inner
    try:
        copy.deepcopy({k: v for k, v in vars(model).items() if not isinstance(v, Layer)})
    except Exception:
        return model.describe()
    return None


class Replicas:
    """The model and ``threads - 1`` replicas, running the shards of each batch on as many threads.

    ``forward`` and ``backward`` stand in for the model's (``fit`` hands them
    to its :class:`~framework.training.trainer.Trainer`); a training loop of
    one's own calls them in place of the model's. Use as a context manager:
    on exit the worker threads stop and NumPy's BLAS gets its thread count back.

    >>> import numpy as np
    >>> from framework.base.context import Context
    >>> from framework.layers import Linear
    >>> layer = Linear(3, 2)
    >>> with Replicas(layer, threads=2) as run:
    ...     ctx = Context(True)
    ...     y = run.forward(ctx, np.ones((8, 3), dtype=np.float32))
    ...     dx = run.backward(ctx, np.ones((8, 2), dtype=np.float32))
    >>> y.shape, dx.shape, layer.weight.grad[0, 0].item()
    ((8, 2), (8, 3), 8.0)

    Args:
        model: a model or a layer, built or not; the replicas are made at
            the first step that finds it built (a step that builds it runs whole).
        threads: the number of shards (threads) per batch, at least 2.
    """

    def __init__(self, model: Layer, threads: int) -> None:
        if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 2:
            raise ConfigError(f"Replicas: threads must be an integer >= 2, got {threads!r}")
        self.model = model
        self.threads = int(threads)
        self.copies: list[Layer] = []
        # per replica: (model's, replica's) parameters, then the same for the buffers
        self._params: list[list[tuple[Any, Any]]] = []
        self._buffers: list[list[tuple[Any, Any]]] = []
        # per replica: (model's, replica's) layers, every level, for _follow
        self._layers: list[list[tuple[Layer, Layer]]] = []
        self._groups: dict[int, ThreadGroup] = {}
        self._rngs: list[np.random.Generator | None] = [None]
        self._epoch = 0
        #: the generators' states at the epoch's start (start_epoch); none outside fit
        self._global_state: Any = None
        self._layer_states: dict[tuple[int, str], Any] = {}
        self._pool: ThreadPoolExecutor | None = None
        self._one_thread: Any = None
        self._checked = False

    def __enter__(self) -> Replicas:
        self._pool = ThreadPoolExecutor(self.threads - 1, thread_name_prefix="framework-shard")
        self._one_thread = blas.one_thread()
        self._one_thread.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if self._one_thread is not None:
            self._one_thread.__exit__(None, None, None)
            self._one_thread = None

    def start_epoch(self, epoch: int) -> None:
        """Derive the replicas' generators for ``epoch`` (see the module's docstring); ``fit`` calls it
        at each epoch's start."""
        self._epoch = int(epoch)
        # the states now, before the epoch draws its shuffle: replicas made later in the epoch (a
        # resumed run makes them at its first batch) derive from these too
        self._global_state = get_rng().bit_generator.state
        self._layer_states = _generator_states(self.model)
        for k, replica in enumerate(self.copies, start=1):
            _reseed(self.model, replica, (k, self._epoch), self._layer_states)
            self._rngs[k] = _derive(self._global_state, (k, self._epoch))

    def _make_copies(self, count: int) -> None:
        """Make replicas up to ``count`` of them (a batch of ``n < threads`` rows needs ``n - 1``)."""
        model = self.model
        params, buffers = model.parameters(), model.buffers()
        for k in range(len(self.copies) + 1, count + 1):
            # The copy shares what the memo maps to itself: the arrays, the optimizer, the history.
            memo: dict[int, Any] = {id(h.data): h.data for h in (*params, *buffers)}
            for name in ("optimizer", "history"):
                shared = getattr(model, name, None)
                if shared is not None:
                    memo[id(shared)] = shared
            try:
                replica = copy.deepcopy(model, memo)
            except Exception as error:
                raise ConfigError(
                    f"threads={self.threads}: cannot copy {model.describe()} for the other threads "
                    f"({_uncopyable(model) or 'a layer'} holds something copy.deepcopy refuses: "
                    f"{type(error).__name__}: {error}); leave threads unset for this model"
                ) from error
            _reseed(model, replica, (k, self._epoch), self._layer_states)
            self.copies.append(replica)
            self._params.append(list(zip(params, replica.parameters())))
            self._buffers.append(list(zip(buffers, replica.buffers())))
            global_state = self._global_state or get_rng().bit_generator.state
            self._rngs.append(_derive(global_state, (k, self._epoch)))
            self._layers.append(list(zip(model.modules(), replica.modules())))

    def _group(self, size: int) -> ThreadGroup:
        group = self._groups.get(size)
        if group is None:
            group = self._groups[size] = ThreadGroup(size)
        return group

    def _run(self, size: int, work: Callable[[int, Layer], Any]) -> list[Any]:
        """``work(k, model_k)`` for shards ``0 .. size-1``, shard 0 here, the others on the pool."""
        if self._pool is None:
            raise ConfigError(
                "Replicas: forward and backward run inside its with block "
                "(with Replicas(model, threads=2) as run: ...)"
            )
        group = self._group(size)
        models = [self.model, *self.copies]
        errors_as = np.geterr()  # NumPy's floating-point error handling is per thread: the caller's

        def member(k: int) -> Any:
            with member_of(group, k), thread_rng(self._rngs[k]), np.errstate(**errors_as):
                try:
                    return work(k, models[k])
                except BaseException:
                    group.abort()  # release the shards waiting for this one in a collective
                    raise

        futures = [self._pool.submit(member, k) for k in range(1, size)]
        results: list[Any] = []
        errors: list[BaseException] = []
        for k in range(size):
            try:
                results.append(member(0) if k == 0 else futures[k - 1].result())
            except BaseException as error:  # re-raised below, once every shard has stopped
                errors.append(error)
        if errors:
            group.reset()
            raise next((e for e in errors if not isinstance(e, GroupAborted)), errors[0])
        return results

    def forward(self, ctx: Context, x: Any, **kwargs: Any) -> Any:
        """The model's output for the batch ``x``, its shards run on the threads (the record on ``ctx``).

        ``kwargs`` go to every shard's call unchanged (``is_causal=True``).
        """
        n = _batch_size(x)
        size = min(self.threads, n)
        if len(self.copies) < size - 1 and self.model.built:
            self._make_copies(size - 1)
        if size < 2 or not self.copies:
            ctx.shards = None
            return self.model.forward(ctx, x, **kwargs)
        self._follow()
        cuts = [n * k // size for k in range(size + 1)]
        if not self._checked:
            self._check_samples_apart(x, cuts, kwargs)
        mode = {"needs_input_grad": ctx.needs_input_grad, "record": ctx.record}
        contexts = [Context(ctx.training, **mode) for _ in range(size)]
        outs = self._run(
            size, lambda k, model: model.forward(contexts[k], rows(x, cuts[k], cuts[k + 1]), **kwargs)
        )
        ctx.shards = (contexts, cuts)
        return _join(outs)

    def _follow(self) -> None:
        """Bring the replicas up to the model's state before a batch.

        The arrays (one replaced since, as by ``astype``), the parameters'
        ``trainable`` flags and every layer's plain attributes (numbers,
        strings, booleans, ``None``: a layer frozen or unfrozen, a rate or a
        temperature a callback changed during ``fit``) are taken from the model.
        """
        for pairs in (*self._params, *self._buffers):
            for mine, theirs in pairs:
                theirs.data = mine.data
        for pairs in self._params:
            for mine, theirs in pairs:
                if theirs.trainable != mine.trainable:
                    theirs.trainable = mine.trainable
        for layer_pairs in self._layers:
            for mine, theirs in layer_pairs:
                state = vars(theirs)
                for key, value in vars(mine).items():
                    if isinstance(value, _PLAIN) and state.get(key, _MISSING) != value:
                        state[key] = value

    def _check_samples_apart(self, x: Any, cuts: list[int], kwargs: dict[str, Any]) -> None:
        """Refuse a model whose outputs for the whole batch are not its shards' outputs joined.

        Once, on the first batch cut, in inference mode: a model that mixes the
        samples of axis 0 (a recurrent layer reading it as time,
        ``batch_first=False``) or returns an output whose first axis is not the
        batch would otherwise train on something else than one thread does.
        """
        self._checked = True

        def infer(model: Layer, part: Any) -> list[Any]:
            out = model.forward(Context(False, record=False), part, **kwargs)
            return list(out) if isinstance(out, (list, tuple)) else [out]

        whole = infer(self.model, x)
        again = infer(self.model, x)
        if any(mismatch(np.asarray(a), [np.asarray(b)]) for a, b in zip(whole, again)):
            return  # random in inference (a Dropout pinned to training=True): nothing to compare
        parts = self._run(len(cuts) - 1, lambda k, model: infer(model, rows(x, cuts[k], cuts[k + 1])))
        for k, one in enumerate(whole):
            problem = mismatch(np.asarray(one), [np.asarray(p[k]) for p in parts])
            if problem is not None:
                raise ConfigError(
                    f"threads={self.threads}: {self.model.describe()}'s output {k} for a whole batch of "
                    f"{cuts[-1]} is not its outputs for the batch's shards joined ({problem}): a layer "
                    "mixes the samples of axis 0 (a recurrent layer with batch_first=False reads it as "
                    "time), or the output's first axis is not the batch. Leave threads unset for this model"
                )

    def backward(self, ctx: Context, grad_out: Any) -> Any:
        """Each shard's backward on its rows of ``grad_out``; the replicas' gradients added into the model's.

        Returns ``dL/dx`` joined from the shards, or ``None`` where the model
        returns none (``ctx.needs_input_grad`` false, as under ``fit``).
        """
        if ctx.shards is None:
            return self.model.backward(ctx, grad_out)
        contexts, cuts = ctx.shards
        size = len(contexts)
        for pairs in self._params[: size - 1]:
            for _, theirs in pairs:
                theirs.zero_grad(lazy=True)
        at_logits = getattr(ctx, "grad_at_logits", False)
        for sub in contexts:
            sub.grad_at_logits = at_logits
        grads = self._run(
            size, lambda k, model: model.backward(contexts[k], rows(grad_out, cuts[k], cuts[k + 1]))
        )
        for pairs in self._params[: size - 1]:
            for mine, theirs in pairs:
                pending = theirs.pending_grad()
                if pending is not None:
                    mine.add_grad(pending)
        return None if any(g is None for g in grads) else _join(grads)


def make_replicas(owner: str, model: Model, threads: Any, on_ranks: bool = False) -> Replicas | None:
    """The :class:`Replicas` that run ``owner``'s batches (``fit``, ``evaluate``, ``predict``) on
    ``threads`` threads, or ``None`` for one thread.

    Raises:
        ConfigError: ``threads`` is not an integer >= 1; above 1 for a model with
            a full-batch layer, or with ``on_ranks`` (data-parallel MPI training).
    """
    if threads is None:
        return None
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1:
        raise ConfigError(f"{owner}: threads must be an integer >= 1, got {threads!r}")
    if threads == 1:
        return None
    if on_ranks:
        raise ConfigError(
            f"{owner}: threads > 1 is not supported with data-parallel training on several MPI ranks; "
            "run one rank per core instead"
        )
    whole = full_batch_layer(model)
    if whole is not None:
        raise ConfigError(
            f"{owner}: threads={threads} would cut the batch of a full-batch model "
            f"({whole.describe()} needs the whole batch); leave threads unset"
        )
    return Replicas(model, int(threads))
