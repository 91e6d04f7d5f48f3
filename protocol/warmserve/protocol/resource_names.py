"""The names WarmServe's own resources have in the Kubernetes API: their group, version and plurals.

One place for them, because the operator (which reconciles them), the gateway (which reads the
ModelDeployments it serves) and the tests all address them. Pure: strings only.
"""

from __future__ import annotations

GROUP = "warmserve.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
WORKER_POOLS = "workerpools"
MODEL_DEPLOYMENTS = "modeldeployments"
