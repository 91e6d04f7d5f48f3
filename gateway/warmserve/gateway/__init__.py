"""WarmServe gateway."""
