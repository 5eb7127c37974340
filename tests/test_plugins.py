"""Plugin discovery through the real mechanisms: built-ins, ./plugins files, entry points."""

import json
import subprocess
import sys
import textwrap

import pytest
from click.testing import CliRunner

from merx import plugins
from merx.cli import cli
from merx.hookspecs import KINDS

LOCAL_FUSION = '''
from merx import hookimpl

@hookimpl
def register_fusions(register):
    register("sum_fusion", make)

def make(audio_dim, text_dim, scale: float = 1.0):
    """Adds the two pooled vectors (test plugin)."""
    raise RuntimeError("not built in this test")
'''


def run_cli(*args):
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result


def listing():
    result = run_cli("list-plugins", "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout), result.stderr


def test_builtins_of_every_kind_are_listed():
    data, _ = listing()
    assert set(data) == set(KINDS)
    for kind, rows in data.items():
        assert rows, f"no built-in {kind}"
        assert all(r["origin"] == "built-in" for r in rows)
    names = {k: {r["name"] for r in rows} for k, rows in data.items()}
    assert {"merge", "synthetic"} <= names["data_sources"]
    assert "vggish" in names["audio_towers"]
    assert "huggingface" in names["text_towers"]
    assert {"concat", "audio_attention", "combined_attention", "cross_attention"} <= names["fusions"]


def test_settings_and_help_come_from_the_factory(tmp_path):
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "sumfusion.py").write_text(LOCAL_FUSION)
    data, _ = listing()
    row = next(r for r in data["fusions"] if r["name"] == "sum_fusion")
    assert row["summary"] == "Adds the two pooled vectors (test plugin)."
    # audio_dim/text_dim are context supplied by merx, not user settings.
    assert row["params"] == [{"name": "scale", "required": False, "default": 1.0}]
    assert row["origin"] == "local file"
    assert row["source"].endswith("sumfusion.py")


def test_local_plugin_shows_its_origin_in_the_table(tmp_path):
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "sumfusion.py").write_text(LOCAL_FUSION)
    result = CliRunner().invoke(cli, ["list-plugins", "--kind", "fusions"], terminal_width=200)
    assert result.exit_code == 0
    assert "sum_fusion" in result.stdout and "local: " in result.stdout


def test_broken_plugin_warns_and_cli_keeps_working(tmp_path):
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "broken.py").write_text("import does_not_exist_anywhere\n")
    data, err = listing()
    assert "broken.py" in err and "ModuleNotFoundError" in err
    assert data["fusions"]  # built-ins still there
    assert "Traceback" not in err


def test_plugin_failing_inside_its_hook_warns(tmp_path):
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "raises.py").write_text(textwrap.dedent('''
        from merx import hookimpl
        @hookimpl
        def register_fusions(register):
            raise ValueError("boom")
    '''))
    _, err = listing()
    assert "raises.py" in err and "register_fusions" in err and "boom" in err


def test_duplicate_name_is_refused_with_a_warning_not_overridden(tmp_path):
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "dupe.py").write_text(textwrap.dedent('''
        from merx import hookimpl
        @hookimpl
        def register_fusions(register):
            register("concat", lambda audio_dim, text_dim: None)
    '''))
    data, err = listing()
    assert "'concat'" in err and "already registered" in err
    row = next(r for r in data["fusions"] if r["name"] == "concat")
    assert row["origin"] == "built-in"


def test_factory_with_var_kwargs_is_rejected_with_a_warning(tmp_path):
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "kw.py").write_text(textwrap.dedent('''
        from merx import hookimpl
        @hookimpl
        def register_fusions(register):
            def make(**kwargs):
                """Takes anything."""
            register("anything", make)
    '''))
    data, err = listing()
    assert "anything" in err and "**kwargs" in err
    assert "anything" not in {r["name"] for r in data["fusions"]}


def test_misspelled_hook_name_is_reported(tmp_path):
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "typo.py").write_text(textwrap.dedent('''
        from merx import hookimpl
        @hookimpl
        def register_fusion(register):
            pass
    '''))
    _, err = listing()
    assert "typo.py" in err and "register_fusion" in err


def test_local_plugins_can_be_switched_off(tmp_path, monkeypatch):
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "sumfusion.py").write_text(LOCAL_FUSION)
    result = run_cli("--no-local-plugins", "list-plugins", "--json", "--kind", "fusions")
    assert "sum_fusion" not in result.stdout
    plugins.reset()
    monkeypatch.setenv("MERX_LOAD_PLUGINS", "")
    result = run_cli("list-plugins", "--json", "--kind", "fusions")
    assert "sum_fusion" not in result.stdout and "concat" in result.stdout


def test_plugins_dir_option(tmp_path):
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "sumfusion.py").write_text(LOCAL_FUSION)
    result = run_cli("--plugins-dir", str(other), "list-plugins", "--json", "--kind", "fusions")
    assert "sum_fusion" in result.stdout


def test_entry_point_plugin_is_loaded_with_distribution_and_version(tmp_path, monkeypatch):
    # A real installed-distribution layout (dist-info with entry_points.txt) on sys.path.
    site = tmp_path / "site"
    (site / "merx_sum").mkdir(parents=True)
    (site / "merx_sum" / "__init__.py").write_text(LOCAL_FUSION)
    info = site / "merx_sum-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: merx-sum\nVersion: 1.2.3\n")
    (info / "entry_points.txt").write_text("[merx]\nsum = merx_sum\n")
    monkeypatch.syspath_prepend(str(site))
    data, _ = listing()
    row = next(r for r in data["fusions"] if r["name"] == "sum_fusion")
    assert (row["origin"], row["source"], row["version"]) == ("distribution", "merx-sum", "1.2.3")
    # MERX_LOAD_PLUGINS restricts external plugins by entry-point name.
    plugins.reset()
    monkeypatch.setenv("MERX_LOAD_PLUGINS", "other")
    data, _ = listing()
    assert "sum_fusion" not in {r["name"] for r in data["fusions"]}


def test_list_plugins_imports_no_heavy_library(tmp_path):
    code = ("import sys\nfrom click.testing import CliRunner\nfrom merx.cli import cli\n"
            "r = CliRunner().invoke(cli, ['list-plugins'])\nassert r.exit_code == 0, r.output\n"
            "heavy = [m for m in ('torch', 'transformers', 'librosa', 'nlpaug', 'audiomentations', 'sqlalchemy')"
            " if m in sys.modules]\nprint(heavy)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_unknown_plugin_error_lists_available():
    reg = plugins.get_registry()
    with pytest.raises(plugins.UnknownPlugin) as info:
        reg.get("fusions", "nope")
    assert "concat" in str(info.value)
