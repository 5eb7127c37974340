"""The public plugin API (merx.api), the test kit (merx.testing), and what merx does with
broken plugins: a warning or a config error naming the plugin, never a traceback or a silent
override."""

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from merx.api import TowerOutput
from merx.cli import cli
from merx.testing import PluginCheckError, check_audio_tower, check_fusion, check_text_tower, registered


def write_plugin(folder, name, code):
    (folder / "plugins").mkdir(exist_ok=True)
    path = folder / "plugins" / f"{name}.py"
    path.write_text(textwrap.dedent(code))
    return path


def cli_run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


# -- the public API --------------------------------------------------------------------------------

def test_public_api_is_one_light_import():
    code = ("import sys, merx.api as api\n"
            "print([m for m in ('torch', 'transformers', 'librosa', 'sqlalchemy') if m in sys.modules])\n"
            "print(' '.join(sorted(api.__all__)))\n")
    heavy, names = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                  check=True).stdout.splitlines()
    assert heavy == "[]"
    assert {"hookimpl", "Register", "TowerOutput", "masked_mean", "KINDS", "CONTEXT", "SongTable"} <= set(names.split())
    from merx import api
    from merx.models.fusions import masked_mean

    assert api.masked_mean is masked_mean  # imported (with torch) on first use only
    assert api.CONTEXT["fusions"] == {"audio_dim", "text_dim", "audio_seq_dim", "text_seq_dim"}


def test_a_hook_may_take_no_arguments(tmp_path):
    path = write_plugin(tmp_path, "quiet", '''
        from merx.api import hookimpl
        CALLED = []
        @hookimpl
        def register_fusions():
            CALLED.append(True)
    ''')
    assert registered(path)["fusions"] == {}
    assert sys.modules["merx_local_plugins.quiet"].CALLED == [True]
    result = cli_run("list-plugins", "--json")
    assert result.exit_code == 0 and "quiet" not in result.stderr


def test_a_hook_asking_for_an_argument_merx_does_not_offer_is_refused_with_a_warning(tmp_path):
    path = write_plugin(tmp_path, "future", '''
        from merx.api import hookimpl
        @hookimpl
        def register_fusions(register, registry):
            register("future", lambda audio_dim, text_dim: None)
    ''')
    with pytest.raises(PluginCheckError, match="registry"):
        registered(path)
    result = cli_run("list-plugins", "--json", "--kind", "fusions")
    assert result.exit_code == 0 and "Traceback" not in result.stderr
    assert "future.py" in result.stderr and "registry" in result.stderr
    assert "future" not in {r["name"] for r in json.loads(result.stdout)["fusions"]}


def test_registered_returns_the_factories_with_settings_and_help(tmp_path):
    path = write_plugin(tmp_path, "two", '''
        from merx.api import hookimpl
        @hookimpl
        def register_fusions(register):
            register("sum_a", make)
        @hookimpl
        def register_commands(cli):
            pass
        def make(audio_dim: int, text_dim: int, scale: float = 2.0):
            """Summary line.

            Longer help."""
    ''')
    found = registered(path)
    assert list(found["fusions"]) == ["sum_a"] and found["fusions"]["sum_a"].__doc__.startswith("Summary")
    row = json.loads(cli_run("list-plugins", "--json").stdout)["fusions"]
    row = next(r for r in row if r["name"] == "sum_a")
    assert row["summary"] == "Summary line."
    assert row["params"] == [{"name": "scale", "required": False, "default": 2.0}]
    assert row["hooks"] == ["register_commands", "register_fusions"]
    table = CliRunner().invoke(cli, ["list-plugins"], env={"COLUMNS": "250"}).stdout
    assert "register_commands, register_fusions" in table and "--no-local-plugins" in table


# -- the built-ins pass the kit ------------------------------------------------------------------

@pytest.mark.parametrize("name, settings", [("concat", {}), ("audio_attention", {}), ("combined_attention", {}),
                                            ("cross_attention", {"dim": 8, "heads": 2}),
                                            ("cross_attention", {"dim": 8, "heads": 2, "pooled": False})])
def test_builtin_fusions_pass_the_kit(name, settings):
    report = check_fusion(name, **settings)
    assert len(report.passed) >= 8 and str(report).startswith(f"fusion {name!r}")


def test_context_sizes_can_be_set():
    report = check_fusion("concat", audio_dim=64, text_dim=384)
    assert "out_dim=448" in report.passed[0]


def test_builtin_towers_pass_the_kit(tiny_bert_dir):
    check_audio_tower("vggish", channels=[4, 8], hidden=16, out_dim=8)
    frozen = check_text_tower("huggingface", model=tiny_bert_dir, max_length=32)
    assert any("frozen" in p for p in frozen.passed)
    trainable = check_text_tower("huggingface", model=tiny_bert_dir, max_length=32, freeze=False, pooling="mean")
    assert any("training step" in p for p in trainable.passed)


# -- the kit catches what merx would trip over ---------------------------------------------------

class Base(nn.Module):
    needs_sequence = False

    def __init__(self, audio_dim, text_dim):
        super().__init__()
        self.project = nn.Linear(audio_dim + text_dim, 6)
        self.out_dim = 6

    def joint(self, audio, text):
        return self.project(torch.cat((audio.pooled, text.pooled), dim=1))


class IgnoresMask(Base):
    needs_sequence = True

    def forward(self, audio, text):
        return self.joint(audio, text) + text.sequence.mean(dim=1).sum(dim=1, keepdim=True)


class DetachesText(Base):
    def forward(self, audio, text):
        return self.joint(audio, text._replace(pooled=text.pooled.detach()))


class WrongOutDim(Base):
    def forward(self, audio, text):
        return torch.cat((self.joint(audio, text), audio.pooled[:, :1]), dim=1)


class Fine(Base):
    forward = Base.joint


class NoisyInEval(Base):
    def forward(self, audio, text):
        return self.joint(audio, text) + torch.randn(len(audio.pooled), 6)


class BatchNormed(Base):
    def __init__(self, audio_dim, text_dim):
        super().__init__(audio_dim, text_dim)
        self.norm = nn.BatchNorm1d(6)

    def forward(self, audio, text):
        return self.norm(self.joint(audio, text))


class PlainTensorState(Base):
    def __init__(self, audio_dim, text_dim):
        super().__init__(audio_dim, text_dim)
        self.scale = torch.randn(6)  # not a buffer: a checkpoint would not keep it

    def forward(self, audio, text):
        return self.joint(audio, text) * self.scale


class ClaimsPooledOnly(Base):
    def forward(self, audio, text):
        return self.joint(audio, text) + (text.sequence * text.mask[..., None]).sum()


class Float64(Base):
    def forward(self, audio, text):
        return self.joint(audio, text).double()


class NoOutDim(nn.Module):
    def forward(self, audio, text):
        return audio.pooled


@pytest.mark.parametrize("factory, message", [
    (IgnoresMask, "changing padded tokens"),
    (DetachesText, "no gradient reaches the text"),
    (WrongOutDim, r"shape \(3, 7\), expected \(3, 6\)"),
    (NoisyInEval, "eval mode"),
    (BatchNormed, "batch of 1 in train mode"),
    (PlainTensorState, "register_buffer"),
    (ClaimsPooledOnly, "needs_sequence = False"),
    (Float64, "float64"),
    (lambda audio_dim, text_dim: NoOutDim(), "out_dim"),
    (lambda audio_dim, text_dim: "a fusion", "not a torch.nn.Module"),
], ids=lambda v: v if isinstance(v, str) else getattr(v, "__name__", "factory"))
def test_the_kit_names_what_is_broken(factory, message):
    with pytest.raises(PluginCheckError, match=message):
        check_fusion(factory)


def test_settings_are_validated_as_an_experiment_file_would_be():
    def scaled(audio_dim: int, text_dim: int, width: int):
        """Needs a width."""
        return Fine(audio_dim, text_dim)

    with pytest.raises(PluginCheckError, match="needs a setting 'width'"):
        check_fusion(scaled)
    with pytest.raises(PluginCheckError, match="width: expected an integer"):
        check_fusion(scaled, width="wide")
    with pytest.raises(PluginCheckError, match="no setting 'widht'.*width"):
        check_fusion(scaled, width=2, widht=3)
    check_fusion(scaled, width=4)


def test_an_audio_tower_that_detaches_its_input_is_caught():
    class Detached(nn.Module):
        out_dim, seq_dim = 4, 4

        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(4, 4)

        def forward(self, mel):
            tokens = self.linear(mel.detach().mean(dim=(1, 2))[:, :, None].expand(-1, -1, 4))
            return TowerOutput(tokens.mean(dim=1), tokens, None)

    with pytest.raises(PluginCheckError, match="no gradient flows .* spectrogram"):
        check_audio_tower(lambda n_mels, n_frames: Detached())


def test_a_frozen_text_tower_with_trainable_weights_is_caught(tiny_bert_dir):
    from merx.models.text import HuggingFaceTower

    def leaky(pretrained: bool = True):
        tower = HuggingFaceTower(tiny_bert_dir, max_length=16)
        tower.encoder.requires_grad_(True)  # claims frozen, but its weights still want to train
        return tower

    with pytest.raises(PluginCheckError, match="frozen = True but .* require grad"):
        check_text_tower(leaky)


# -- broken plugins in a real working directory -----------------------------------------------------

def test_broken_plugins_warn_by_name_and_merx_keeps_working(tmp_path):
    write_plugin(tmp_path, "a_first", '''
        from merx.api import hookimpl
        @hookimpl
        def register_fusions(register):
            register("twin", twin)
        def twin(audio_dim: int, text_dim: int):
            """The first twin."""
    ''')
    write_plugin(tmp_path, "b_second", '''
        from merx.api import hookimpl
        @hookimpl
        def register_fusions(register):
            register("twin", twin)
        def twin(audio_dim: int, text_dim: int):
            """The second twin."""
    ''')
    write_plugin(tmp_path, "c_syntax", "def broken(:\n")
    write_plugin(tmp_path, "d_signature", '''
        from merx.api import hookimpl
        @hookimpl
        def register_fusions(reg):
            reg("odd", None)
    ''')
    result = cli_run("list-plugins", "--json", "--kind", "fusions")
    assert result.exit_code == 0 and "Traceback" not in result.stderr
    err = result.stderr
    # Neither twin wins silently: the warning names both and the qualified names that pick one.
    assert "b_second.py" in err and "'twin'" in err and "a_first.py" in err and "contested" in err
    assert "'a_first:twin'" in err and "'b_second:twin'" in err
    assert "c_syntax.py" in err and "SyntaxError" in err
    assert "d_signature.py" in err and "reg" in err
    twin = next(r for r in json.loads(result.stdout)["fusions"] if r["name"] == "twin")
    assert twin["summary"] == "The first twin." and twin["source"].endswith("a_first.py")


def test_a_required_setting_missing_from_the_experiment_is_a_config_error_naming_the_plugin(tmp_path):
    write_plugin(tmp_path, "needy", '''
        from merx.api import hookimpl
        @hookimpl
        def register_fusions(register):
            register("needy", needy)
        def needy(audio_dim: int, text_dim: int, width: int):
            """Needs a width."""
    ''')
    (tmp_path / "exp.toml").write_text('[model.fusion]\nname = "needy"\n')
    result = cli_run("config", "exp.toml")
    assert result.exit_code == 2 and "Traceback" not in result.stderr
    assert "fusion 'needy' needs a setting 'width'" in result.stderr
    assert cli_run("config", "exp.toml", "--set", "model.fusion.width=4").exit_code == 0


def test_plugin_check_command(tmp_path):
    result = cli_run("plugin", "check", "fusion", "cross_attention", "--set", "dim=8", "--set", "heads=2")
    assert result.exit_code == 0, result.output
    assert "checks passed" in result.stdout and "padded tokens" in result.stdout
    write_plugin(tmp_path, "lazy", '''
        from merx.api import hookimpl
        @hookimpl
        def register_fusions(register):
            register("lazy", lazy)
        def lazy(audio_dim: int, text_dim: int):
            """Returns no module."""
            return None
    ''')
    result = cli_run("plugin", "check", "fusions", "lazy")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "fusion 'lazy'" in result.stderr and "not a torch.nn.Module" in result.stderr
    assert cli_run("plugin", "check", "data_source", "synthetic").exit_code == 2
