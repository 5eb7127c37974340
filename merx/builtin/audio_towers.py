"""Built-in audio_towers (placeholder until implemented)."""
