"""Experiment files: TOML -> one resolved, validated, hashable config -> typed settings.

A config is a plain nested dict. ``SCHEMA`` (``schema``) says which keys exist, their types and
defaults; plugin tables (``[data.source]``, ``[model.audio]``, ...) hold a ``name`` plus that
plugin's own settings, which are checked against the plugin factory's signature (``validate``).
``resolve``/``load`` (``load``) return the config with every default filled in: that dict is
what a run stores, hashes (``hashing``) and prints (``write``). The engine below the pipeline
reads typed, frozen sections of it instead (``settings``: ``Experiment.from_config(cfg)``).

Nothing here imports torch: ``merx --help`` and ``merx config`` stay instant.
"""

from merx.config.hashing import canonical_json, config_hash, flatten
from merx.config.load import RawConfig, apply_sets, get, key_parts, load, load_file, parse_set, resolve
from merx.config.schema import LR_PARTS, SCHEMA, F, PluginList, PluginTable, schema_markdown
from merx.config.validate import _validate_plugin_table  # noqa: F401  (merx.testing checks settings with it)
from merx.config.write import to_toml, toml_value
from merx.errors import ConfigError

__all__ = ["ConfigError", "F", "LR_PARTS", "PluginList", "PluginTable", "RawConfig", "SCHEMA", "apply_sets",
           "canonical_json", "config_hash", "flatten", "get", "key_parts", "load", "load_file", "parse_set", "resolve",
           "schema_markdown", "to_toml", "toml_value"]
