"""The control plane's Kubernetes adapter: the scheduler's ports over the API server.

The one subpackage of ``warmserve.operator`` that may import the ``kubernetes`` client and ``aiohttp``;
it sits above the scheduler and the policies, and nothing of the control plane imports it
(docs/architecture.md, docs/kube-cluster.md).
"""
