"""Built-in data_sources (placeholder until implemented)."""
