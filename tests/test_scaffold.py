"""`merx plugin new`: the written plugins load, list, and pass their own tests unchanged."""

import json
import os
import subprocess
import sys
import tomllib

import pytest
from click.testing import CliRunner

from merx.cli import cli
from merx.scaffold import TEMPLATE_KINDS


def merx(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_every_template_is_found_listed_and_passes_its_generated_tests(tmp_path):
    names = {"fusions": "my_fusion", "audio_towers": "my_cnn", "text_towers": "my_words"}
    assert set(names) == set(TEMPLATE_KINDS)
    for kind, name in names.items():
        result = merx("plugin", "new", kind[:-1], name)
        assert result.exit_code == 0, result.output
        assert f"plugins/{name}.py" in result.stdout and f"tests/test_{name}_plugin.py" in result.stdout
    result = merx("plugin", "new", "fusion", "packed", "--package")
    assert result.exit_code == 0, result.output

    # merx finds the single files in ./plugins, with their settings and their docstring as help.
    listed = json.loads(merx("list-plugins", "--json").stdout)
    for kind, name in names.items():
        row = next(r for r in listed[kind] if r["name"] == name)
        assert row["origin"] == "local file" and row["params"] and row["summary"]
        assert all(not p["required"] for p in row["params"])  # defaults everywhere: usable as written

    # The package declares its entry point in the merx group.
    project = tomllib.loads((tmp_path / "merx-packed" / "pyproject.toml").read_text())
    assert project["project"]["name"] == "merx-packed"
    assert project["project"]["entry-points"]["merx"] == {"packed": "merx_packed"}
    assert (tmp_path / "merx-packed" / "merx_packed" / "__init__.py").exists()

    # The generated tests use merx.testing; they pass unchanged (in a fresh python, as a user runs them).
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "merx-packed")}
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--import-mode=importlib",
                          "tests", "merx-packed/tests"], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "8 passed" in out.stdout


def test_written_files_are_light_to_import(tmp_path):
    merx("plugin", "new", "fusion", "light")
    code = ("import sys, runpy\nrunpy.run_path('plugins/light.py')\n"
            "print([m for m in ('torch', 'transformers') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("args, message", [
    (["fusion", "Bad-Name"], "python identifier"),
    (["fusion", "nl\n"], "python identifier"),
    (["fusion", "trailing_space "], "python identifier"),
    (["fusion", "concat"], "already exists (built-in)"),
    (["fusoin", "x"], "unknown plugin kind 'fusoin'"),
    (["data_source", "x"], "no template for data sources"),
])
def test_mistakes_are_refused_with_a_clear_message(args, message, tmp_path):
    result = merx("plugin", "new", *args)
    assert result.exit_code == 2 and message in result.stderr and "Traceback" not in result.output
    assert not (tmp_path / "plugins").exists()  # nothing written, not even a folder


def test_nothing_is_overwritten(tmp_path):
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_mine_plugin.py").write_text("# my own test\n")
    result = merx("plugin", "new", "fusion", "mine")
    assert result.exit_code == 2 and "not overwriting" in result.stderr
    assert not (tmp_path / "plugins" / "mine.py").exists()
    assert (tmp_path / "tests" / "test_mine_plugin.py").read_text() == "# my own test\n"


def test_dir_option(tmp_path):
    result = merx("plugin", "new", "audio_tower", "elsewhere", "--dir", tmp_path / "project")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "project" / "plugins" / "elsewhere.py").exists()
    assert (tmp_path / "project" / "tests" / "test_elsewhere_plugin.py").exists()
