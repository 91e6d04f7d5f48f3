"""The decision core: snapshot → plan → placement → planner → desired state; pure (docs/planning.md)."""
