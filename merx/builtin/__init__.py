"""merx's own plugins. Each module here implements hooks exactly as a third-party plugin
does; the engine imports none of them directly (only this list, through the registry)."""

MODULES = [
    "merx.builtin.data_sources",
    "merx.builtin.audio_augmentations",
    "merx.builtin.text_augmentations",
    "merx.builtin.audio_towers",
    "merx.builtin.text_towers",
    "merx.builtin.fusions",
]
