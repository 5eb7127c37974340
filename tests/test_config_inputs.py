"""What a user can hand merx as an experiment: out-of-range values and files that are not
experiments are each one line naming the file (or the option) and the key, exit 2, before any
work -- never a traceback, never a run on values that mean nothing."""

import random

import pytest
from click.testing import CliRunner

from merx import config
from merx.cli import cli
from merx.config import SCHEMA, ConfigError, F

from tiny_experiment import tiny_raw


def merx(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def one_error_line(result) -> str:
    """The single ``error: ...`` line a refused command prints (exit 2), and nothing else."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and isinstance(result.exception, (SystemExit, type(None)))
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


# -- ranges: stated in the schema, checked at load ---------------------------------------------

@pytest.mark.parametrize("text, where, message", [
    ("seed = -1\n", "seed", "must be ≥ 0, got -1"),
    ("[train.lr]\naudio = -0.001\n", "train.lr.audio", "must be > 0, got -0.001"),
    ("[train]\nlr = -1e-3\n", "train.lr", "must be > 0, got -0.001"),
    ("[model.head]\ndropout = 1.0\n", "model.head.dropout", "must be in [0, 1), got 1.0"),
    ("[model.head]\nhidden = [16, 0]\n", "model.head.hidden[1]", "must be ≥ 1, got 0"),
    # A plugin's own setting named dropout gets the head's range by its name.
    ('[model.fusion]\nname = "cross_attention"\ndropout = 1.5\n', "model.fusion.dropout", "must be in [0, 1), got 1.5"),
    ("[model.audio]\ndropout = -0.1\n", "model.audio.dropout", "must be in [0, 1), got -0.1"),
    ("[train.scheduler]\ngamma = 0\n", "train.scheduler.gamma", "must be in (0, 1], got 0.0"),
    ("[features]\nhop_length = 4096\n", "features.hop_length", "must be ≤ n_fft (2048), got 4096"),
    # The bound broken by the setting the file wrote, not by the default it left alone.
    ("[features]\nn_fft = 256\n", "features.n_fft", "must be ≥ hop_length (512), got 256"),
    ("[train]\nweight_decay = nan\n", "train.weight_decay", "must be a finite number, got nan"),
    ("[features]\nduration = inf\n", "features.duration", "must be a finite number, got inf"),
    ('[model.fusion]\nname = "cross_attention"\ndropout = nan\n', "model.fusion.dropout",
     "must be a finite number, got nan"),
    ('[[augment.audio]]\nname = "time_mask"\np = 2.0\n', "augment.audio[0].p", "must be in [0, 1], got 2.0"),
])
def test_out_of_range_values_are_one_line_naming_file_and_key(tmp_path, text, where, message):
    f = tmp_path / "bad.toml"
    f.write_text(text)
    assert one_error_line(merx("config", f)) == f"error: {f}: {where}: {message}"


def test_a_set_value_out_of_range_names_the_option(tmp_path):
    f = tmp_path / "e.toml"
    f.write_text("seed = 1\n")
    line = one_error_line(merx("config", f, "--set", "train.lr.audio=-0.001"))
    assert line == "error: --set train.lr.audio=-0.001: must be > 0, got -0.001"
    line = one_error_line(merx("config", f, "--set", "features.n_fft=256"))
    assert line == "error: --set features.n_fft=256: must be ≥ hop_length (512), got 256"


def _bounded():
    def walk(node, prefix):
        for k, spec in node.items():
            if isinstance(spec, dict):
                yield from walk(spec, f"{prefix}{k}.")
            elif isinstance(spec, F):
                yield f"{prefix}{k}", spec
    return list(walk(SCHEMA, ""))


def _outside(spec: F):
    """A value just past each numeric bound of ``spec``."""
    kind = spec.items or spec.type
    step = 1 if kind is int else 0.5
    for op, bound in spec.bounds():
        if isinstance(bound, str):
            continue
        value = {"gt": bound, "ge": bound - step, "lt": bound, "le": bound + step}[op]
        yield [value] if spec.items else value


@pytest.mark.parametrize("key, spec", [(k, s) for k, s in _bounded() if list(_outside(s))])
def test_every_range_in_the_schema_is_enforced(tmp_path, key, spec):
    f = tmp_path / "e.toml"
    f.write_text("seed = 1\n")
    for value in _outside(spec):
        with pytest.raises(ConfigError, match="must be ") as info:
            config.load(f, [f"{key}={config.toml_value(value)}"])
        assert info.value.key.startswith(key) and str(info.value).startswith(f"--set {key}=")
        assert spec.range_text() in config.schema_markdown()


@pytest.mark.parametrize("key", [k for k, s in _bounded() if s.type is float])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_no_float_setting_takes_nan_or_inf(tmp_path, key, value):
    f = tmp_path / "e.toml"
    f.write_text("seed = 1\n")
    with pytest.raises(ConfigError, match=f"must be a finite number, got {value}"):
        config.load(f, [f"{key}={value}"])


@pytest.mark.parametrize("dry_run", [True, False])
def test_run_refuses_a_negative_seed_before_preparing_data(tmp_path, tiny_bert_dir, dry_run):
    """seed = -1 used to train every epoch and then fail while computing the baselines."""
    raw = tiny_raw(tiny_bert_dir, tmp_path / "cache", seed=-1)
    del raw["name"]
    f = tmp_path / "neg.toml"
    f.write_text(config.to_toml(raw))
    args = ["run", f, "--db", tmp_path / "r.db"] + (["--dry-run"] if dry_run else [])
    assert one_error_line(merx(*args)) == f"error: {f}: seed: must be ≥ 0, got -1"
    assert not (tmp_path / "cache").exists()


def test_ranges_are_in_the_generated_reference():
    md = config.schema_markdown()
    assert "| `seed` | integer ≥ 0 |" in md and "| `train.lr.audio` | number > 0 |" in md
    assert "| `model.head.dropout` | number in [0, 1) |" in md and "integer ≥ 1, ≤ n_fft" in md
    assert "any setting `dropout`: in [0, 1)" in md


# -- files (and --set options) that are not experiments ----------------------------------------

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f\x15\xc4\x89"


@pytest.mark.parametrize("name, data, message", [
    ("plot.png", PNG, "not a TOML text file"),
    ("noise.toml", random.Random(0).randbytes(512), "not a TOML text file"),
    # Binary without a NUL byte is still not text.
    ("ctl.toml", b"seed = 1\n\x01\x02\xff\xfe\x03", "not a TOML text file"),
    ("latin1.toml", 'name = "café"\n'.encode("latin-1"), "not UTF-8 text: byte 0xe9 at line 1, column 12"),
    ("utf16.toml", 'seed = 1\n'.encode("utf-16"), "is UTF-16 text; TOML files are UTF-8"),
    ("empty.toml", b"", "the file is empty: nothing to run"),
    ("comments.toml", b"# nothing here yet\n\n   \n", "the file is empty: nothing to run"),
    ("bom-empty.toml", b"\xef\xbb\xbf\n", "the file is empty: nothing to run"),
    ("missing.toml", None, "file not found"),
])
def test_a_file_that_is_not_an_experiment_is_one_line_naming_it(tmp_path, name, data, message):
    f = tmp_path / name
    if data is not None:
        f.write_bytes(data)
    for command in (["config", f], ["run", f, "--dry-run"]):
        line = one_error_line(merx(*command))
        assert line.startswith(f"error: {f}: {message}"), line


def test_a_utf8_bom_is_accepted(tmp_path):
    """Windows editors write one; tomllib refuses it ("Invalid statement" at line 1)."""
    f = tmp_path / "bom.toml"
    f.write_bytes(b"\xef\xbb\xbfseed = 7\r\n[train]\r\nepochs = 3\r\n")
    result = merx("config", f, "--json")
    assert result.exit_code == 0, result.output
    assert '"seed": 7' in result.stdout and '"epochs": 3' in result.stdout
    parent = tmp_path / "base.toml"
    parent.write_bytes(b"\xef\xbb\xbf[train]\nbatch_size = 4\n")
    child = tmp_path / "child.toml"
    child.write_text('extends = "base.toml"\n')
    assert config.load(child)["train"]["batch_size"] == 4


def test_a_file_holding_only_extends_is_not_empty_and_an_empty_parent_is_allowed(tmp_path):
    (tmp_path / "base.toml").write_text("[train]\nepochs = 3\n")
    (tmp_path / "only.toml").write_text('extends = "base.toml"\n')
    assert config.load(tmp_path / "only.toml")["train"]["epochs"] == 3
    (tmp_path / "placeholder.toml").write_text("")
    (tmp_path / "child.toml").write_text('extends = "placeholder.toml"\nseed = 2\n')
    assert config.load(tmp_path / "child.toml")["seed"] == 2


@pytest.mark.parametrize("extends, message", [
    ('""', "is empty: name the file to start from, or remove the line"),
    ('"  "', "is empty: name the file to start from, or remove the line"),
    ('"configs"', "'configs' is a folder, not an experiment file"),
    ('"."', "'.' is a folder, not an experiment file"),
])
def test_extends_that_names_no_file_is_one_line_naming_the_key(tmp_path, extends, message):
    (tmp_path / "configs").mkdir()
    f = tmp_path / "child.toml"
    f.write_text(f"extends = {extends}\nseed = 1\n")
    assert one_error_line(merx("config", f)) == f"error: {f}: extends: {message}"


@pytest.mark.parametrize("item, message", [
    ("train..epochs=2", "the key 'train..epochs' has an empty part"),
    (".x=1", "the key '.x' has an empty part"),
    ("x.=1", "the key 'x.' has an empty part"),
    ("=3", "no key before '='"),
    (" =3", "no key before '='"),
    ("train.epochs", "expected KEY=VALUE, e.g. train.epochs=5"),
    ("seed.x=1", "'seed' is a value, not a table"),
])
def test_a_malformed_set_is_one_line_naming_the_option(tmp_path, item, message):
    f = tmp_path / "e.toml"
    f.write_text("seed = 1\n")
    for command in ("config", "run"):
        line = one_error_line(merx(command, f, "--set", item, *(["--dry-run"] if command == "run" else [])))
        assert line.startswith(f"error: --set {item.strip()}: {message}"), line
        assert str(f) not in line


def test_a_folder_given_as_the_experiment_is_refused_naming_it(tmp_path):
    folder = tmp_path / "experiments"
    folder.mkdir()
    # merx's own one line, not click's three-line usage error.
    result = merx("run", folder)
    assert result.exit_code == 2 and "is a folder, not an experiment file" in result.stderr
    assert result.stderr.count("error:") == 1 and "Usage:" not in result.stderr and "Traceback" not in result.output
    with pytest.raises(ConfigError, match=f"^{folder}: is a folder, not an experiment file$"):
        config.load(folder)


# -- sweeps: seeds and [sweep] values are the file's (or --seeds'), never a --set's ------------

def test_seeds_out_of_range_name_where_they_were_given(tmp_path):
    f = tmp_path / "s.toml"
    f.write_text("seed = 1\n[sweep]\nseeds = [3, -1]\n")
    assert one_error_line(merx("config", f)) == f"error: {f}: sweep.seeds: every seed must be ≥ 0, got -1"
    f.write_text("seed = 1\n")
    assert one_error_line(merx("run", f, "--seeds", "-1,2", "--dry-run")) == \
        "error: --seeds: every seed must be ≥ 0, got -1"


def test_a_bad_sweep_value_names_the_files_sweep_not_an_option(tmp_path):
    f = tmp_path / "grid.toml"
    f.write_text('[sweep]\n"train.epochs" = [1, 0]\n')
    line = one_error_line(merx("config", f))
    assert line == f"error: {f}: sweep cell train.epochs=0: train.epochs: must be ≥ 1, got 0"
    with pytest.raises(ConfigError) as info:
        from merx.sweep import load_plan
        load_plan(f)
    assert info.value.key == "sweep.train.epochs" and info.value.file == str(f)
    f.write_text('[sweep]\n"train..epochs" = [1]\n')
    assert one_error_line(merx("config", f)) == \
        f"error: {f}: sweep: the key 'train..epochs' has an empty part: write dotted keys as train.lr.audio"
