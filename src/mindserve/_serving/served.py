"""A servable definition as a runtime serves it: the user's declarations, plus the switches
the runtime and the test kit (:mod:`mindserve.testing`) hand to loading.

The declarations (:class:`~mindserve._define.servable.ServableDefinition`, ``Model``) carry
no test switch. A runtime serves a :class:`ServedDefinition`; it travels with the version,
to worker processes too (they get the definition the main process loads).
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from mindserve._define.model import Model
from mindserve._define.servable import ServableDefinition


@attrs.frozen
class ServedDefinition(ServableDefinition):
    """A definition with the switches it is served with."""

    #: Batches hold one call's instances only, and nothing waits on a clock
    #: (``mindserve.testing.DeterministicRuntime``).
    deterministic: bool = False
    #: The models a test replaced (``mindserve.testing.replace_models``), by name: the model
    #: its declarations call, so that ``Model.call`` on it reaches the stand-in serving it.
    replaced: Mapping[str, Model] = attrs.field(factory=dict)

    @classmethod
    def of(cls, definition: ServableDefinition, deterministic: bool = False) -> ServedDefinition:
        """``definition`` served, deterministically if it or ``deterministic`` says so."""
        if not isinstance(definition, ServedDefinition):
            return cls(**attrs.asdict(definition, recurse=False), deterministic=deterministic)
        if deterministic and not definition.deterministic:
            return attrs.evolve(definition, deterministic=True)
        return definition

    def declared(self, model: Model) -> Model:
        """The model the declarations call for ``model`` (a stand-in's original, else itself)."""
        return self.replaced.get(model.name, model)
