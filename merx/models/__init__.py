"""Towers, fusions, heads and the model that joins them."""
