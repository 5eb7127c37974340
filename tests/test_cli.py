"""The command line as a whole: one place prints errors, plugin commands, narrow terminals,
hints from the results database. Real files, real SQLite, the real ``merx`` group."""

import os
import subprocess
import sys
import textwrap

import pytest
from click.testing import CliRunner

from merx.cli import cli
from merx.store import RunStore

LMF = {"kind": "fusions", "name": "lmf", "origin": "distribution", "source": "lowrank-fusion", "version": "0.1.0"}
CONCAT = {"kind": "fusions", "name": "concat", "origin": "built-in", "source": "merx.builtin.fusions",
          "version": None}


def merx(*args, **kw):
    return CliRunner().invoke(cli, [str(a) for a in args], **kw)


def record(store, experiment="quickstart", fusion="concat", modalities="both", metrics=None, plugins=(), seed=0):
    """A completed run as `merx run` would leave it, without training one."""
    cfg = {"name": experiment, "seed": seed, "task": "classification",
           "model": {"modalities": modalities, "fusion": {"name": fusion}}}
    rid = store.start_run(experiment=experiment, experiment_file=None, config=cfg, config_hash=f"c{seed}{fusion}",
                          group_hash="3f2a9c1d00", seed=seed, task="classification", device="cpu", versions={},
                          git_commit=None)
    store.add_plugins(rid, list(plugins))
    store.add_metrics(rid, "test", metrics or {"macro_f1": 0.76, "accuracy": 0.8})
    store.finish_run(rid, "completed", best_epoch=3, epochs_run=5)
    return rid


def write_plugin(tmp_path, name, code):
    (tmp_path / "plugins").mkdir(exist_ok=True)
    (tmp_path / "plugins" / f"{name}.py").write_text(textwrap.dedent(code))


# -- one place prints every MerxError --------------------------------------------------------------

def test_an_error_is_one_line_on_stderr_with_its_exit_code_and_no_traceback(tmp_path):
    result = merx("show", "run99")
    assert result.exit_code == 2
    assert result.stdout == "" and "Traceback" not in result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: no run run99")


def test_a_bad_argument_is_a_usage_error_exit_2():
    result = merx("plugin", "check", "data_source", "synthetic")
    assert result.exit_code == 2 and result.stderr.startswith("error: the test kit checks fusion")


# -- an unknown plugin: which earlier runs used one of that name ----------------------------------

def test_an_unknown_plugin_names_the_runs_that_used_it_and_how_to_install_it(tmp_path, monkeypatch):
    store = RunStore(tmp_path / "hand.db")
    record(store, plugins=[CONCAT])
    record(store, plugins=[CONCAT], seed=1)
    record(store, fusion="lmf", plugins=[LMF])
    record(store, fusion="lmf", plugins=[LMF], seed=1)
    (tmp_path / "exp.toml").write_text('name = "exp"\n')

    result = merx("run", "exp.toml", "--set", "model.fusion.name=lmf", "--db", tmp_path / "hand.db", "--dry-run")
    assert result.exit_code == 2, result.output
    error, hint = result.stderr.splitlines()
    assert error.startswith("error: ") and "'lmf'" in error
    assert hint == ("hint: runs run3, run4 used fusion 'lmf' from lowrank-fusion 0.1.0: "
                    "pip install lowrank-fusion==0.1.0")
    # Commands without --db consult $MERX_DB (or results.db) the same way ...
    monkeypatch.setenv("MERX_DB", str(tmp_path / "hand.db"))
    assert "pip install lowrank-fusion==0.1.0" in merx("config", "exp.toml", "--set", "model.fusion.name=lmf").stderr
    # ... and a name no run used gets no hint.
    other = merx("config", "exp.toml", "--set", "model.fusion.name=nothing_like_it")
    assert other.exit_code == 2 and "hint:" not in other.stderr


def test_looking_for_a_hint_creates_no_database(tmp_path):
    (tmp_path / "exp.toml").write_text('name = "exp"\n')
    result = merx("prepare", "exp.toml", "--set", "model.fusion.name=lmf")
    assert result.exit_code == 2 and "'lmf'" in result.stderr
    assert not (tmp_path / "results.db").exists()


# -- plugin commands --------------------------------------------------------------------------------

BROKEN_COMMANDS = '''
    import click
    from merx import hookimpl

    @hookimpl
    def register_commands(cli):
        @cli.command("half")
        def half():
            """Added before the plugin fails: must not survive its failure."""
        raise RuntimeError("no commands today")
'''

GOOD_COMMANDS = '''
    import click
    from merx import hookimpl

    @hookimpl
    def register_commands(cli):
        @cli.command("hello")
        def hello():
            """Says hello."""
            click.echo("hello from b_good")
'''


def test_a_plugin_failing_in_register_commands_does_not_hide_the_next_plugins_commands(tmp_path):
    # Broken on both sides: pluggy would call c_broken first and a_broken last.
    write_plugin(tmp_path, "a_broken", BROKEN_COMMANDS)
    write_plugin(tmp_path, "b_good", GOOD_COMMANDS)
    write_plugin(tmp_path, "c_broken", BROKEN_COMMANDS)
    result = merx("hello")
    assert result.exit_code == 0, result.output
    assert result.stdout == "hello from b_good\n"
    warnings = [line for line in result.stderr.splitlines() if "register_commands" in line]
    assert len(warnings) == 2 and all("no commands today" in w for w in warnings)
    assert "a_broken.py" in warnings[0] and "c_broken.py" in warnings[1]
    assert "Traceback" not in result.output
    assert merx("half").exit_code == 2  # what the broken plugin added before failing is gone
    assert "hello" in merx("--help").stdout


def test_a_plugin_cannot_replace_a_merx_command(tmp_path):
    write_plugin(tmp_path, "hijack", '''
        from merx import hookimpl

        @hookimpl
        def register_commands(cli):
            @cli.command("runs")
            def runs():
                """Not merx's."""
    ''')
    listing = merx("--help")
    assert "hijack.py" in listing.stderr and "kept merx's" in listing.stderr
    result = merx("runs", "--json")
    assert result.exit_code == 0 and result.stdout.strip() == "[]"


def test_a_command_from_plugins_dir_is_found(tmp_path):
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "greeting.py").write_text(textwrap.dedent(GOOD_COMMANDS))
    assert merx("hello").exit_code == 2
    result = merx("--plugins-dir", other, "hello")
    assert result.exit_code == 0 and result.stdout == "hello from b_good\n"


# -- --no-local-plugins: no code from a plugin folder runs, whatever else is on the line -------------

# Writes a file when imported: the proof that merx ran code from the folder.
EVIL = "import pathlib\npathlib.Path(__file__).with_name('{name}.ran').write_text('ran')\n"


def plugin_folders(tmp_path):
    """./plugins/evil.py and elsewhere/evil2.py, each leaving a marker beside itself when imported."""
    markers = []
    for folder, name in (("plugins", "evil"), ("elsewhere", "evil2")):
        (tmp_path / folder).mkdir(exist_ok=True)
        (tmp_path / folder / f"{name}.py").write_text(EVIL.format(name=name))
        markers.append(tmp_path / folder / f"{name}.ran")
    return markers


def merx_process(tmp_path, *args, env=()):
    """`python -m merx ARGS` in its own process, run in tmp_path: nothing cached from other tests."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MERX_")}
    return subprocess.run([sys.executable, "-m", "merx", *args], cwd=tmp_path, env={**clean, **dict(env)},
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("args, env", [
    (["--no-local-plugins", "--help"], {}),
    (["--help", "--no-local-plugins"], {}),  # click runs --help's callback first: it lists plugin commands
    (["--plugins-dir", "elsewhere", "--help", "--no-local-plugins"], {}),
    (["--no-local-plugins", "runz"], {}),
    (["--no-local-plugins", "--plugins-dir", "elsewhere", "runz"], {}),
    (["--no-local-plugins", "--bogus"], {}),
    (["runz", "--no-local-plugins"], {}),  # in the wrong place: still honoured, never read too late
    (["--no-local-plugins", "list-plugins"], {}),
    (["--no-local-plugins", "run", "x.toml"], {}),
    (["--help"], {"MERX_NO_LOCAL_PLUGINS": "1"}),
    (["--plugins-dir", "elsewhere", "runz"], {"MERX_NO_LOCAL_PLUGINS": "1", "MERX_PLUGINS_DIR": "elsewhere"}),
])
def test_no_local_plugins_runs_no_plugin_file_for_any_command(tmp_path, args, env):
    markers = plugin_folders(tmp_path)
    result = merx_process(tmp_path, *args, env=env)
    assert "Traceback" not in result.stderr, result.stderr
    assert [m.name for m in markers if m.exists()] == []


def test_without_the_switch_the_plugin_files_do_run(tmp_path):
    # The other side of the test above: the marker files do appear when merx loads the folders.
    markers = plugin_folders(tmp_path)
    result = merx_process(tmp_path, "--plugins-dir", "elsewhere", "--help")
    assert result.returncode == 0, result.stderr
    assert all(m.exists() for m in markers)


def test_no_local_plugins_lasts_one_invocation_and_leaves_the_environment_alone(tmp_path):
    write_plugin(tmp_path, "b_good", GOOD_COMMANDS)
    assert merx("--no-local-plugins", "hello").exit_code == 2
    assert "MERX_NO_LOCAL_PLUGINS" not in os.environ
    # In the same process, the next command without the switch loads ./plugins again.
    result = merx("hello")
    assert result.exit_code == 0 and result.stdout == "hello from b_good\n"
    assert merx("hello", "--no-local-plugins").exit_code == 2  # the cached registry is not reused


# -- merx runs and merx show ------------------------------------------------------------------------

def test_runs_fits_80_columns_without_cutting_names(tmp_path):
    store = RunStore(tmp_path / "r.db")
    record(store)
    record(store, fusion="cross_attention", seed=1, metrics={"macro_f1": 0.71})
    record(store, experiment="quickstart_audio", modalities="audio", metrics={"macro_f1": 0.5})
    store.update_run(1, note="the first")
    store.tag_run(1, add=["baseline"])
    for args in ([], ["--sort", "macro_f1"]):
        result = merx("runs", "--db", tmp_path / "r.db", *args, env={"COLUMNS": "80"})
        assert result.exit_code == 0, result.output
        lines = result.stdout.splitlines()
        assert max(map(len, lines)) <= 80
        assert "…" not in result.stdout
        rows = {line.split()[0]: line.split() for line in lines if line.startswith("run") and ":" not in line}
        assert rows["run1"][1:4] == ["quickstart", "completed", "concat"]
        assert rows["run2"][1:4] == ["quickstart", "completed", "cross_attention"]
        assert rows["run3"][1:5] == ["quickstart_audio", "completed", "audio", "only"]
        assert "run1: baseline — the first" in lines


def test_show_names_each_plugins_distribution_and_version(tmp_path):
    store = RunStore(tmp_path / "r.db")
    local = {"kind": "audio_towers", "name": "mine", "origin": "local file", "source": "/p/plugins/mine.py",
             "version": None}
    record(store, fusion="lmf", plugins=[LMF, CONCAT, local])
    out = merx("show", "run1", "--db", tmp_path / "r.db", env={"COLUMNS": "200"}).stdout
    plugins = next(line for line in out.splitlines() if line.startswith("plugins: "))
    assert "fusion:lmf (lowrank-fusion 0.1.0)" in plugins
    assert "fusion:concat (built-in)" in plugins
    assert "audio_tower:mine (local: /p/plugins/mine.py)" in plugins
    assert "quickstart@3f2a9c1d" in out  # the group, as merx compare takes it


# -- list-plugins --requirements with a distribution that fails to import ---------------------------

def test_requirements_list_a_broken_distribution_and_say_it_is_broken(tmp_path, monkeypatch):
    site = tmp_path / "site"
    (site / "lowrank_fusion").mkdir(parents=True)
    (site / "lowrank_fusion" / "__init__.py").write_text("import a_module_nobody_installed\n")
    info = site / "lowrank_fusion-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: lowrank-fusion\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text("[merx]\nlmf = lowrank_fusion\n")
    monkeypatch.syspath_prepend(str(site))

    result = merx("list-plugins", "--requirements")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["lowrank-fusion==0.1.0"]
    assert "# lowrank-fusion==0.1.0 is installed but merx could not load it" in result.stderr
    assert "a_module_nobody_installed" in result.stderr and "no plugin distributions installed" not in result.stderr
    table = merx("list-plugins", env={"COLUMNS": "200"}).stdout
    row = next(line for line in table.splitlines() if "lowrank-fusion 0.1.0" in line)
    assert "broken: ModuleNotFoundError" in row


# -- light start-up and facts stated twice ----------------------------------------------------------

def test_help_imports_no_heavy_library():
    code = ("import sys\nfrom click.testing import CliRunner\nfrom merx.cli import cli\n"
            "r = CliRunner().invoke(cli, ['--help'])\nassert r.exit_code == 0, r.output\n"
            "print([m for m in ('torch', 'sqlalchemy', 'numpy', 'rich', 'librosa') if m in sys.modules])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_status_choices_are_the_stores():
    from merx.commands.options import STATUSES
    from merx.store import STATUSES as STORE_STATUSES

    assert STATUSES == STORE_STATUSES
