"""The README stays true: its config reference is the schema's, its commands exist."""

import re
from pathlib import Path

from merx.config import schema_markdown

README = Path(__file__).resolve().parents[1] / "README.md"


def test_config_reference_matches_the_schema():
    text = README.read_text()
    block = text.split("<!-- config-reference:start -->")[1].split("<!-- config-reference:end -->")[0]
    assert block.strip() == schema_markdown().strip(), "run `python -m merx.config` and paste it into README.md"


def test_readme_opens_with_the_two_commands_that_ci_runs():
    text = README.read_text()
    commands = re.findall(r"```bash\n(python3 -m venv[^\n]+)\n```", text)
    assert len(commands) >= 2
    assert commands[0].endswith("merx run experiments/quickstart.toml")
    ci = (README.parent / ".ci" / "run").read_text()
    assert commands[1] in ci
