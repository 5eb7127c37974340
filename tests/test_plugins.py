"""Plugin discovery through the real mechanisms: built-ins, ./plugins files, entry points."""

import importlib
import json
import os
import subprocess
import sys
import textwrap
from importlib.metadata import entry_points

import pytest
from click.testing import CliRunner

from merx import plugins
from merx.cli import cli
from merx.errors import ContestedPlugin, MerxError, UnknownPlugin
from merx.hookspecs import KINDS
from merx.plugins import BrokenPlugin, provenance_label

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


def test_the_switch_applies_to_a_registry_loaded_before_it(tmp_path, monkeypatch):
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "sumfusion.py").write_text(LOCAL_FUSION)
    assert "sum_fusion" in plugins.get_registry().plugins["fusions"]
    monkeypatch.setenv("MERX_NO_LOCAL_PLUGINS", "1")
    assert "sum_fusion" not in plugins.get_registry().plugins["fusions"]
    with plugins.local_plugins_switched_off(False):
        assert "sum_fusion" not in plugins.get_registry().plugins["fusions"]
    monkeypatch.delenv("MERX_NO_LOCAL_PLUGINS")
    with plugins.local_plugins_switched_off():
        assert "sum_fusion" not in plugins.get_registry().plugins["fusions"]
    assert "MERX_NO_LOCAL_PLUGINS" not in os.environ
    assert "sum_fusion" in plugins.get_registry().plugins["fusions"]


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


# -- contested names, load order, broken plugins -----------------------------------------------------

def fusion_plugin(name: str, doc: str) -> str:
    return textwrap.dedent(f'''
        from merx import hookimpl

        @hookimpl
        def register_fusions(register):
            register({name!r}, make)

        def make(audio_dim, text_dim):
            """{doc}"""
    ''')


def install(site, dist: str, version: str, module: str, code: str):
    """A real installed-distribution layout in ``site``: the module plus a dist-info with an entry point."""
    (site / module).mkdir(parents=True)
    (site / module / "__init__.py").write_text(code)
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[merx]\n{module} = {module}\n")
    return site


def load(monkeypatch, *sites) -> plugins.Registry:
    """A fresh registry with ``sites`` first on sys.path, in that order; warnings collected, not shown."""
    monkeypatch.setattr(sys, "path", [str(s) for s in sites] + [p for p in sys.path if p not in map(str, sites)])
    importlib.invalidate_caches()
    with pytest.warns(plugins.PluginWarning):
        return plugins.get_registry(reload=True)


@pytest.fixture
def two_lmfs(tmp_path):
    """Two distributions, each in its own site folder, registering the same fusion name."""
    a = install(tmp_path / "site_a", "lowrank-fusion", "0.1.0", "lowrank_fusion_t", fusion_plugin("lmf", "Low rank."))
    b = install(tmp_path / "site_b", "fusion-zoo", "2.0.0", "fusion_zoo_t", fusion_plugin("lmf", "From the zoo."))
    return a, b


def test_a_name_two_distributions_register_is_contested_and_picked_by_qualified_name(two_lmfs, monkeypatch):
    reg = load(monkeypatch, *two_lmfs)
    assert any("'lmf' is contested" in w and "'lowrank-fusion:lmf'" in w and "'fusion-zoo:lmf'" in w
               for w in reg.warnings)
    with pytest.raises(ContestedPlugin) as info:
        reg.get("fusions", "lmf")
    assert "lowrank-fusion 0.1.0" in str(info.value) and "fusion-zoo 2.0.0" in str(info.value)
    assert 'name = "' in info.value.hint and info.value.exit_code == 2
    assert reg.get("fusions", "lowrank-fusion:lmf").summary == "Low rank."
    assert reg.get("fusions", "fusion-zoo:lmf").summary == "From the zoo."
    assert reg.get("fusions", "Fusion_Zoo:lmf").source == "fusion-zoo"  # spelled as pip would accept it
    assert reg.names("fusions").count("lmf") == 1
    assert list(reg.contested("fusions")) == ["lmf"]
    # Uncontested names take a qualified name too, built-ins under "merx".
    assert reg.get("fusions", "merx:concat") is reg.get("fusions", "concat")
    with pytest.raises(UnknownPlugin, match="available: fusion-zoo:lmf, lowrank-fusion:lmf"):
        reg.get("fusions", "elsewhere:lmf")


def test_an_experiment_naming_a_contested_plugin_is_refused_until_it_picks_one(two_lmfs, monkeypatch, tmp_path):
    from merx.config import load as load_experiment

    reg = load(monkeypatch, *two_lmfs)
    (tmp_path / "exp.toml").write_text('[model.fusion]\nname = "lmf"\n')
    # A user error (exit 2) whichever layer reports it, naming both contenders.
    with pytest.raises(MerxError, match="contested") as info:
        load_experiment(tmp_path / "exp.toml", registry=reg)
    assert info.value.exit_code == 2 and "lowrank-fusion 0.1.0" in str(info.value) and "fusion-zoo" in str(info.value)
    (tmp_path / "exp.toml").write_text('[model.fusion]\nname = "lowrank-fusion:lmf"\n')
    cfg = load_experiment(tmp_path / "exp.toml", registry=reg)
    assert cfg["model"]["fusion"]["name"] == "lowrank-fusion:lmf"


def test_entry_points_load_by_distribution_name_whatever_the_sys_path_order(two_lmfs, monkeypatch):
    def found_order():
        return [ep.dist.metadata["Name"] for ep in entry_points(group="merx")
                if ep.dist.metadata["Name"] in {"lowrank-fusion", "fusion-zoo"}]

    forward = load(monkeypatch, *two_lmfs)
    importlib_forward = found_order()
    backward = load(monkeypatch, *reversed(two_lmfs))
    assert found_order() == importlib_forward[::-1]  # importlib's order follows sys.path
    for reg in (forward, backward):
        assert [p.source for p in reg.registrations["fusions"]["lmf"]] == ["fusion-zoo", "lowrank-fusion"]
        assert [n for n, _ in reg.pm.list_name_plugin() if n.startswith("distribution:")] == \
            ["distribution:fusion-zoo", "distribution:lowrank-fusion"]
        assert reg.plugins["fusions"]["lmf"].source == "fusion-zoo"


def test_a_builtin_name_taken_by_a_local_file_is_contested_too(tmp_path):
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "mine.py").write_text(fusion_plugin("concat", "My concat."))
    with pytest.warns(plugins.PluginWarning, match="'concat' is contested"):
        reg = plugins.get_registry()
    with pytest.raises(ContestedPlugin, match="built-in.*local: .*mine.py"):
        reg.get("fusions", "concat")
    assert reg.get("fusions", "merx:concat").origin == "built-in"
    assert reg.get("fusions", "mine:concat").summary == "My concat."
    assert not reg.broken  # contested is not broken: both work when picked


def test_plugins_that_fail_to_import_or_register_are_listed_as_broken(tmp_path, monkeypatch):
    site = install(tmp_path / "site", "merx-broken", "0.3.0", "merx_broken_t", "raise RuntimeError('on purpose')\n")
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "syntax.py").write_text("def broken(:\n")
    (tmp_path / "plugins" / "kwargs.py").write_text(textwrap.dedent('''
        from merx import hookimpl
        @hookimpl
        def register_fusions(register):
            register("anything", lambda **kw: None)
    '''))
    reg = load(monkeypatch, site)
    assert BrokenPlugin("distribution", "merx-broken", "0.3.0", "RuntimeError: on purpose") in reg.broken
    syntax = next(b for b in reg.broken if b.source.endswith("syntax.py"))
    assert (syntax.origin, syntax.version) == ("local file", None) and "SyntaxError" in syntax.error
    kwargs = next(b for b in reg.broken if b.source.endswith("kwargs.py"))
    assert "'anything'" in kwargs.error and "**kwargs" in kwargs.error
    assert len(reg.broken) == 3
    assert reg.get("fusions", "concat").origin == "built-in"  # the rest of merx works


def test_provenance_label_is_the_one_spelling_of_where_a_plugin_came_from(tmp_path):
    assert provenance_label({"kind": "fusions", "name": "lmf", "origin": "distribution",
                             "source": "lowrank-fusion", "version": "0.1.0"}) == "lmf (lowrank-fusion 0.1.0)"
    assert provenance_label({"kind": "fusions", "name": "concat", "origin": "built-in",
                             "source": "merx.builtin.fusions", "version": None}) == "concat (built-in)"
    assert provenance_label({"kind": "fusions", "name": "film", "origin": "local file",
                             "source": "/path/plugins/film.py", "version": None}) == \
        "film (local: /path/plugins/film.py)"
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "sumfusion.py").write_text(LOCAL_FUSION)
    reg = plugins.get_registry()
    for plugin in (reg.get("fusions", "concat"), reg.get("fusions", "sum_fusion")):
        assert provenance_label(plugin.provenance()) == f"{plugin.name} ({plugin.origin_label})"
