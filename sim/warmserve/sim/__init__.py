"""WarmServe sim."""
