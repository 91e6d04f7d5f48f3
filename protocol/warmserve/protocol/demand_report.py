"""Per-model demand at the gateway, as the scheduler reads it from ``GET /demand`` each tick.

``inflight``: requests sent to an instance and not finished; ``queued``: requests held for lack of a
free instance; ``arrivals_total``: valid requests for the model since the gateway started (a counter:
the scheduler takes differences between polls). :func:`parse_demand` validates a ``/demand`` document
for the reader and raises :class:`InvalidFieldError` naming the first bad field.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from warmserve.protocol.errors import InvalidFieldError


@dataclass(frozen=True, slots=True)
class ModelDemand:
    """Demand for one model at one instant."""

    inflight: int
    queued: int
    arrivals_total: int


def demand_body(demand: Mapping[str, ModelDemand]) -> dict[str, dict[str, Any]]:
    """The ``/demand`` JSON document: ``{model: {inflight, queued, arrivals_total}}``."""
    return {name: asdict(d) for name, d in demand.items()}


def parse_demand(doc: object) -> dict[str, ModelDemand]:
    """Validate a ``/demand`` document (the scheduler's side)."""
    if not isinstance(doc, Mapping):
        raise InvalidFieldError("demand", "an object {model: {inflight, queued, arrivals_total}}", doc)
    out = {}
    for name, entry in doc.items():
        if not isinstance(entry, Mapping):
            raise InvalidFieldError(f"demand[{name}]", "an object", entry)
        values = [entry.get(f) for f in ("inflight", "queued", "arrivals_total")]
        for field, value in zip(("inflight", "queued", "arrivals_total"), values, strict=True):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InvalidFieldError(f"demand[{name}].{field}", "an integer >= 0", value)
        out[str(name)] = ModelDemand(*values)  # type: ignore[arg-type]
    return out
