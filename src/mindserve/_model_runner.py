"""A loaded model: checks each instance's inputs, batches them, runs, slices the outputs.

Every call into one model is serialized by the model's own lock (and MindSpore networks
also hold MindSpore's process lock), so any number of threads may call :meth:`run`.
A batch that fails is retried one instance at a time, so that one bad instance fails
alone and the others still get their results.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from mindserve import _batching
from mindserve._backends import Backend
from mindserve._errors import InvalidInputError, LoadError, ModelError
from mindserve._mindspore import first_line
from mindserve._model import Model
from mindserve._outcome import Failure, Outcome
from mindserve._specs import TensorSpec, to_model_input

#: Largest batch fed to a model that accepts any batch size.
DEFAULT_MAX_BATCH_SIZE = 64


class LoadedModel:
    """A model of a running servable version, ready to run instances."""

    def __init__(self, model: Model, backend: Backend, where: str) -> None:
        self.model = model
        self.name = model.name
        self.backend = backend
        self.where = where
        self._lock = threading.Lock()
        specs = backend.input_specs
        self.n_inputs = len(specs) if specs is not None else model.inputs
        self._check_signature()
        self.unbatched = set(model.without_batch_dim_inputs)
        #: Per-instance spec of each input (the batch dimension dropped), or None.
        self.instance_specs: tuple[TensorSpec | None, ...] | None = None
        #: The batch size the model was exported with, or None if it takes any.
        self.fixed_batch_size: int | None = None
        if specs is not None:
            self.instance_specs = tuple(
                s if (not model.with_batch_dim or i in self.unbatched) else s.drop_batch_dim()
                for i, s in enumerate(specs)
            )
            if model.with_batch_dim:
                batched = [s for i, s in enumerate(specs) if i not in self.unbatched]
                if batched and batched[0].shape[0] is not None:
                    self.fixed_batch_size = batched[0].shape[0]

    def _check_signature(self) -> None:
        model, specs = self.model, self.backend.input_specs
        if specs is not None and model.inputs is not None and len(specs) != model.inputs:
            raise LoadError(
                f"{self.where}: model '{model.name}' takes {len(specs)} inputs, but a method "
                f"calls it with {model.inputs}"
            )
        if model.with_batch_dim and specs is not None:
            bad = [i for i in model.without_batch_dim_inputs if i >= len(specs)]
            if bad:
                raise LoadError(
                    f"{self.where}: model '{model.name}' has {len(specs)} inputs; "
                    f"without_batch_dim_inputs names {bad}"
                )
            if any(len(s.shape) == 0 for i, s in enumerate(specs) if i not in model.without_batch_dim_inputs):
                raise LoadError(
                    f"{self.where}: model '{model.name}' has a scalar input, which has no batch "
                    f"dimension. Hint: declare it with with_batch_dim=False or list the input "
                    f"in without_batch_dim_inputs."
                )

    @property
    def batch_size(self) -> int:
        """How many instances go into one call."""
        if not self.model.with_batch_dim:
            return 1
        return self.fixed_batch_size or DEFAULT_MAX_BATCH_SIZE

    def warm_up(self) -> None:
        """Run once on zeros when every input shape is known, to compile and check outputs."""
        specs = self.instance_specs
        if specs is None or any(s is None or s.dtype is None or None in s.shape for s in specs):
            return
        instance = tuple(np.zeros(s.shape, s.dtype) for s in specs)  # type: ignore[arg-type,union-attr]
        (outcome,) = self.run([instance])
        if isinstance(outcome, Failure):
            raise LoadError(f"{self.where}: model '{self.name}' failed its warm-up run: {outcome.detail}")

    # -- running -------------------------------------------------------------------

    def run(self, instances: Sequence[tuple[Any, ...]], labels: Sequence[str] | None = None) -> list[Outcome]:
        """Run the model over instances (each a tuple of input values); one outcome each."""
        outcomes: list[Outcome | None] = [None] * len(instances)
        ready: list[int] = []
        arrays: list[tuple[np.ndarray, ...]] = []
        for index, values in enumerate(instances):
            converted = self._convert(values, labels)
            if isinstance(converted, Failure):
                outcomes[index] = converted
            else:
                ready.append(index)
                arrays.append(converted)
        if self.model.with_batch_dim:
            groups = _batching.group(arrays, sorted(self.unbatched))
        else:
            groups = [[i] for i in range(len(arrays))]
        for members in groups:
            for chunk in _batching.chunks(members, self.batch_size):
                results = self._run_isolating([arrays[i] for i in chunk])
                for position, result in zip(chunk, results):
                    outcomes[ready[position]] = result
        return outcomes  # type: ignore[return-value]

    def _convert(
        self, values: tuple[Any, ...], labels: Sequence[str] | None
    ) -> tuple[np.ndarray, ...] | Failure:
        if self.n_inputs is not None and len(values) != self.n_inputs:
            return Failure(
                InvalidInputError,
                f"model '{self.name}' takes {self.n_inputs} inputs; got {len(values)}",
            )
        converted: list[np.ndarray] = []
        for position, value in enumerate(values):
            spec = self.instance_specs[position] if self.instance_specs else None
            array, problem = to_model_input(value, spec)
            if problem is not None:
                source = f" ({labels[position]})" if labels else ""
                return Failure(InvalidInputError, f"model '{self.name}' input {position}{source}: {problem}")
            assert array is not None
            converted.append(array)
        return tuple(converted)

    def _run_isolating(self, batch: list[tuple[np.ndarray, ...]]) -> list[Outcome]:
        results = self._run_batch(batch)
        if isinstance(results, Failure) and len(batch) > 1:
            return [self._run_one(arrays) for arrays in batch]
        if isinstance(results, Failure):
            return [results]
        return results

    def _run_one(self, arrays: tuple[np.ndarray, ...]) -> Outcome:
        results = self._run_batch([arrays])
        return results if isinstance(results, Failure) else results[0]

    def _run_batch(self, batch: list[tuple[np.ndarray, ...]]) -> list[Outcome] | Failure:
        with_batch_dim = self.model.with_batch_dim
        try:
            if with_batch_dim:
                inputs = _batching.stack(batch, sorted(self.unbatched), self.fixed_batch_size)
            else:
                inputs = batch[0]
            with self._lock:
                outputs = self.backend.run(inputs)
        except Exception as exc:
            return Failure(
                ModelError, f"model '{self.name}' failed: {type(exc).__name__}: {first_line(exc)}", exc
            )
        if len(outputs) != self.model.outputs:
            return Failure(
                ModelError,
                f"model '{self.name}' returned {len(outputs)} outputs; it is declared with "
                f"outputs={self.model.outputs}",
            )
        if not with_batch_dim:
            return [tuple(np.asarray(o) for o in outputs)]
        sliced = _batching.unstack(outputs, self.fixed_batch_size or len(batch), len(batch))
        if isinstance(sliced, str):
            return Failure(ModelError, f"model '{self.name}': {sliced}")
        return sliced  # type: ignore[return-value]
