"""Built-in text_towers (placeholder until implemented)."""
