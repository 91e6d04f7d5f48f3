"""Scheduling policies, one module each: WarmServe and its ablations, and the baselines it is measured
against. ``registry.policy_by_name`` is how the simulator and the local runner pick one;
docs/baselines.md says what each baseline models and what it leaves out."""
