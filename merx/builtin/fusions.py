"""Built-in fusions (placeholder until implemented)."""
