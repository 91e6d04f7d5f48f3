"""WarmServe operator."""
