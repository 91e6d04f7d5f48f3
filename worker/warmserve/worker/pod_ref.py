"""The worker's own Pod: where its desired state comes from and its observed state goes.

The desired-state source (:mod:`.desired_source`) watches the Pod's annotation and the observed-state
sink (:mod:`.observed_sink`) patches it; they reach the API server over plain HTTP
(:mod:`warmserve.protocol.kube_http`, by the operator's rules of configuration and errors) and follow the
Pod with the operator's :class:`~warmserve.protocol.list_watch.ListWatch`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from warmserve.protocol.errors import InvalidFieldError


@dataclass(frozen=True, slots=True)
class PodRef:
    """The worker's own Pod, which carries its desired state and receives its observed state."""

    namespace: str
    name: str

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> PodRef:
        """Read ``POD_NAMESPACE`` and ``POD_NAME`` (set by the downward API); raise naming the missing one."""
        env = os.environ if env is None else env
        for var in ("POD_NAMESPACE", "POD_NAME"):
            if not env.get(var):
                raise InvalidFieldError(
                    var, "the worker Pod's namespace and name (downward API)", env.get(var)
                )
        return cls(namespace=env["POD_NAMESPACE"], name=env["POD_NAME"])

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"
