"""WarmServe worker."""
