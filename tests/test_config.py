"""Experiment files: extends, --set, validation with suggestions, defaults, hashing."""

import json

import pytest
from click.testing import CliRunner

from merx import config
from merx.cli import cli
from merx.config import ConfigError


def write(path, text):
    path.write_text(text)
    return path


def test_defaults_are_filled_in(tmp_path):
    cfg = config.load(write(tmp_path / "e.toml", 'seed = 3\n'))
    assert cfg["name"] == "e" and cfg["seed"] == 3
    assert cfg["features"]["n_mels"] == 128 and cfg["features"]["ref"] == "fixed"
    assert cfg["model"]["audio"]["name"] == "vggish"
    # plugin settings are filled from the factory's signature
    assert cfg["model"]["audio"]["channels"] == [64, 128, 256, 512]
    assert cfg["train"]["lr"] == {"audio": 1e-3, "text": 1e-5, "fusion": 1e-3, "head": 1e-3}


def test_extends_is_relative_to_the_file_and_later_values_win(tmp_path):
    (tmp_path / "base").mkdir()
    write(tmp_path / "base" / "common.toml",
          '[train]\nepochs = 7\nbatch_size = 4\n[model.fusion]\nname = "cross_attention"\nheads = 2\n')
    (tmp_path / "exp").mkdir()
    f = write(tmp_path / "exp" / "child.toml", 'extends = "../base/common.toml"\n[train]\nepochs = 9\n')
    cfg = config.load(f)
    assert cfg["train"]["epochs"] == 9 and cfg["train"]["batch_size"] == 4
    assert cfg["model"]["fusion"]["name"] == "cross_attention" and cfg["model"]["fusion"]["heads"] == 2


def test_switching_plugin_drops_the_old_plugins_settings(tmp_path):
    write(tmp_path / "base.toml", '[model.fusion]\nname = "cross_attention"\nheads = 2\n')
    f = write(tmp_path / "child.toml", 'extends = "base.toml"\n[model.fusion]\nname = "concat"\n')
    assert config.load(f)["model"]["fusion"]["name"] == "concat"
    cfg = config.load(tmp_path / "base.toml", ["model.fusion.name=concat"])
    assert "heads" not in cfg["model"]["fusion"]


def test_extends_cycle_and_missing_parent(tmp_path):
    write(tmp_path / "a.toml", 'extends = "b.toml"\n')
    write(tmp_path / "b.toml", 'extends = "a.toml"\n')
    with pytest.raises(ConfigError, match="cycle"):
        config.load(tmp_path / "a.toml")
    write(tmp_path / "c.toml", 'extends = "nope.toml"\n')
    with pytest.raises(ConfigError, match="does not exist"):
        config.load(tmp_path / "c.toml")


def test_set_overrides_parse_toml_values(tmp_path):
    f = write(tmp_path / "e.toml", "seed = 0\n")
    cfg = config.load(f, ["train.epochs=3", "train.amp=false", "model.head.hidden=[32, 16]",
                          "task=classification", "train.lr.text=2e-5"])
    assert cfg["train"]["epochs"] == 3 and cfg["train"]["amp"] is False
    assert cfg["model"]["head"]["hidden"] == [32, 16] and cfg["task"] == "classification"
    assert cfg["train"]["lr"]["text"] == 2e-5


def test_scalar_lr_sets_every_part(tmp_path):
    cfg = config.load(write(tmp_path / "e.toml", "[train]\nlr = 0.01\n"))
    assert set(cfg["train"]["lr"].values()) == {0.01}


@pytest.mark.parametrize("text, key, fragment", [
    ("[train]\nepocs = 3\n", "train.epocs", "did you mean 'epochs'"),
    ("[featurs]\nn_mels = 3\n", "featurs", "did you mean 'features'"),
    ("[train]\nepochs = 'many'\n", "train.epochs", "expected an integer"),
    ("task = 'regresion'\n", "task", "did you mean 'regression'"),
    ("[model.fusion]\nname = 'concatt'\n", "model.fusion.name", "available: "),
    ("[model.audio]\nchanels = [1]\n", "model.audio.chanels", "did you mean 'channels'"),
    ("[model.audio]\nconvs_per_block = 'two'\n", "model.audio.convs_per_block", "expected an integer"),
    ("[train]\nbatch_size = 0\n", "train.batch_size", "must be ≥ 1, got 0"),
    ("task = 'classification'\n[train.early_stopping]\nmonitor = 'val_macro_f1'\n", "train.early_stopping.mode",
     "higher"),
    ("[train.early_stopping]\nmonitor = 'val_macro_f1'\nmode = 'max'\n", "train.early_stopping.monitor",
     "available: "),
    ("[train.early_stopping]\nmonitor = 'val_quadrant_macro_f'\nmode = 'max'\n", "train.early_stopping.monitor",
     "did you mean 'val_quadrant_macro_f1'"),
])
def test_bad_configs_name_the_file_and_key(tmp_path, text, key, fragment):
    f = write(tmp_path / "bad.toml", text)
    with pytest.raises(ConfigError) as info:
        config.load(f)
    assert info.value.key == key
    assert fragment in str(info.value)
    assert str(f) in str(info.value)


def test_cli_typo_exits_2_with_suggestion(tmp_path):
    f = write(tmp_path / "bad.toml", "[train]\nepocs = 3\n")
    result = CliRunner().invoke(cli, ["config", str(f)])
    assert result.exit_code == 2
    assert "train.epocs" in result.stderr and "did you mean 'epochs'" in result.stderr


def test_cli_invalid_toml_and_missing_file(tmp_path):
    f = write(tmp_path / "bad.toml", "[train\n")
    result = CliRunner().invoke(cli, ["config", str(f)])
    assert result.exit_code == 2 and "not valid TOML" in result.stderr
    result = CliRunner().invoke(cli, ["config", "missing.toml"])
    assert result.exit_code == 2 and "file not found" in result.stderr


def test_config_command_prints_resolved_toml_that_loads_back(tmp_path):
    f = write(tmp_path / "e.toml", "seed = 5\n")
    result = CliRunner().invoke(cli, ["config", str(f), "--set", "train.epochs=2"])
    assert result.exit_code == 0, result.output
    out = write(tmp_path / "resolved.toml", result.stdout)
    again = config.load(out)
    original = config.load(f, ["train.epochs=2"])
    assert again == original
    as_json = CliRunner().invoke(cli, ["config", str(f), "--json"])
    assert json.loads(as_json.stdout)["seed"] == 5


def test_hash_ignores_name_and_tags_but_not_settings(tmp_path):
    a = config.load(write(tmp_path / "a.toml", 'tags = ["x"]\n'))
    b = config.load(write(tmp_path / "b.toml", "seed = 0\n"))  # an empty file is refused
    c = config.load(write(tmp_path / "c.toml", "[train]\nepochs = 3\n"))
    assert config.config_hash(a) == config.config_hash(b) != config.config_hash(c)
    d = config.load(write(tmp_path / "d.toml", "seed = 9\n"))
    assert config.config_hash(d) != config.config_hash(b)
    assert config.config_hash(d, include_seed=False) == config.config_hash(b, include_seed=False)


def test_flatten():
    assert config.flatten({"a": {"b": {"c": 1}}, "d": 2}) == {"a.b.c": 1, "d": 2}


def test_augmentation_lists_and_strategy_validate(tmp_path):
    f = write(tmp_path / "e.toml", '[augment]\nstrategy = "on_the_fly"\n[[augment.audio]]\nname = "time_mask"\n'
                                   'max_width = 16\np = 0.5\n[[augment.text]]\nname = "word_swap"\n')
    cfg = config.load(f)
    assert cfg["augment"]["strategy"] == "on_the_fly" and cfg["augment"]["variants"] == 4
    assert cfg["augment"]["audio"][0]["max_width"] == 16 and cfg["augment"]["audio"][0]["p"] == 0.5
    with pytest.raises(ConfigError, match="did you mean 'on_the_fly'"):
        config.load(f, ["augment.strategy=on_the_fy"])
    with pytest.raises(ConfigError, match=r"must be in \[0, 1\], got 2.0"):
        config.load(f, ["augment.audio=[{name = 'time_mask', p = 2.0}]"])


def test_set_errors_name_the_option_and_keep_the_plugin_error_as_cause(tmp_path):
    from merx.errors import UnknownPlugin

    f = write(tmp_path / "e.toml", "[train]\nepochs = 3\n")
    with pytest.raises(ConfigError) as info:
        config.load(f, ["model.fusion.name=lmf"])
    assert str(info.value).startswith("--set model.fusion.name=lmf: unknown fusion 'lmf'; available: ")
    assert str(f) not in str(info.value) and info.value.key == "model.fusion.name"
    assert isinstance(info.value.__cause__, UnknownPlugin) and info.value.__cause__.name == "lmf"
    # A key inside a table the option gave is named after the option.
    with pytest.raises(ConfigError, match=r"^--set augment.audio=\[.*\]: augment.audio\[0\].p: must be in \[0, 1\]"):
        config.load(f, ["augment.audio=[{name = 'time_mask', p = 2.0}]"])
    with pytest.raises(ConfigError, match=r"^--set train.epocs=4: unknown key 'epocs' \(did you mean 'epochs'"):
        config.load(f, ["train.epocs=4"])
    # The file's own mistakes still name the file, whatever else --set gave.
    bad = write(tmp_path / "bad.toml", "[model.fusion]\nname = 'lmf'\n")
    with pytest.raises(ConfigError, match=f"^{bad}: model.fusion.name: unknown fusion 'lmf'") as info:
        config.load(bad, ["train.epochs=2"])
    assert isinstance(info.value.__cause__, UnknownPlugin)
    # A later file value for the key (origin=None, as a sweep's cells) is the file's again.
    raw = config.apply_sets(config.apply_sets(config.load_file(f), ["model.fusion.name=lmf"]),
                            ["model.fusion.name=nope"], origin=None)
    with pytest.raises(ConfigError, match=f"^{f}: model.fusion.name: unknown fusion 'nope'"):
        config.resolve(raw, str(f))


def test_cli_set_error_blames_the_option(tmp_path):
    f = write(tmp_path / "e.toml", "seed = 0\n")
    result = CliRunner().invoke(cli, ["config", str(f), "--set", "model.fusion.name=lmf"])
    assert result.exit_code == 2
    assert "--set model.fusion.name=lmf: unknown fusion 'lmf'; available: " in result.stderr
    assert str(f) not in result.stderr


def test_any_plugin_error_from_the_registry_is_a_config_error_naming_the_key(tmp_path):
    from merx.errors import PluginError
    from merx.plugins import get_registry

    class Contested:
        """A registry where every fusion name is claimed twice (as qualified names allow)."""

        def __init__(self, real):
            self.real = real

        def get(self, kind, name):
            if kind == "fusions":
                raise PluginError(f"fusion {name!r} is contested", hint="pick one by its qualified name")
            return self.real.get(kind, name)

        def names(self, kind):
            return self.real.names(kind)

    f = write(tmp_path / "e.toml", "seed = 0\n")
    with pytest.raises(ConfigError) as info:
        config.load(f, registry=Contested(get_registry()))
    assert info.value.key == "model.fusion.name" and "contested" in str(info.value)
    assert info.value.hint == "pick one by its qualified name" and isinstance(info.value.__cause__, PluginError)
    with pytest.raises(ConfigError, match=r"^--set model.fusion.name=gmu: fusion 'gmu' is contested"):
        config.load(f, ["model.fusion.name=gmu"], registry=Contested(get_registry()))


@pytest.mark.parametrize("value", [3, 2.5, 1e-5, float("inf"), True, "a \"quoted\"\nline", [32, 16], [],
                                   [[1, 2], ["x"]], {"min_cutoff_freq": 2000.0, "nested": {"a": [1, {"b": 2}]}},
                                   {"two words": 1}, {}])
def test_toml_value_reads_back_as_the_same_value(value):
    import tomllib

    text = config.toml_value(value)
    assert "\n" not in text and tomllib.loads(f"v = {text}")["v"] == value
    assert config.parse_set(f"k={text}") == ("k", value)


def test_toml_value_refuses_what_toml_cannot_hold():
    with pytest.raises(ConfigError, match="no null"):
        config.toml_value(None)
    with pytest.raises(ConfigError, match="cannot use"):
        config.toml_value(object())


def test_resolved_toml_leaves_unset_settings_out_and_reloads(tmp_path):
    from merx.plugins import get_registry

    (tmp_path / "plugins").mkdir()
    write(tmp_path / "plugins" / "maybe.py",
          "from merx import hookimpl\n@hookimpl\ndef register_fusions(register):\n    register('maybe', maybe)\n"
          "def maybe(audio_dim, text_dim, scale: float | None = None, tags: dict | None = None):\n"
          "    'Settings that default to None.'\n")
    get_registry(reload=True)
    f = write(tmp_path / "e.toml", '[model.fusion]\nname = "maybe"\ntags = { a = 1 }\n'
                                   '[[augment.audio]]\nname = "audiomentations"\ntransform = "Gain"\n'
                                   'params = { min_gain_db = -6.0 }\n')
    cfg = config.load(f)
    assert cfg["model"]["fusion"]["scale"] is None
    text = config.to_toml(cfg)
    assert "scale" not in text  # TOML has no null: left out, and loading fills the default again
    assert config.load(write(tmp_path / "again.toml", text)) == cfg


@pytest.mark.parametrize("key, other", [("deterministic", True), ("data_on_device", False), ("compile", True),
                                        ("channels_last", False)])
def test_a_setting_added_later_at_its_neutral_value_leaves_the_hash_of_older_runs_alone(key, other):
    cfg = config.resolve({"seed": 1}, "x.toml")
    before = {**cfg, "train": {k: v for k, v in cfg["train"].items() if k != key}}  # as stored pre-key
    assert config.config_hash(cfg) == config.config_hash(before)
    assert config.config_hash(cfg, include_seed=False) == config.config_hash(before, include_seed=False)
    on = config.resolve({"seed": 1, "train": {key: other}}, "x.toml")
    assert config.config_hash(on) != config.config_hash(cfg)
    assert "deterministic" in cfg["train"]  # hashing never edits the config it reads

