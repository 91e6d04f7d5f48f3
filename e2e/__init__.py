"""End-to-end test support: the test control plane (``e2e/cluster``) and its Python harness."""
