"""``python -m merx.config``: print the README's config reference."""

from merx.config.schema import schema_markdown

print(schema_markdown())
