"""merx-gmu's tests: merx's plugin test kit does the work."""

import pytest
import torch

import merx_gmu
from merx.api import TowerOutput
from merx.testing import PluginCheckError, check_fusion, registered


def test_registers_gmu_without_warnings():
    assert registered(merx_gmu)["fusions"] == {"gmu": merx_gmu.gmu}


@pytest.mark.parametrize("settings", [{}, {"dim": 8, "dropout": 0.0}])
def test_gmu_passes_the_fusion_checks(settings):
    check_fusion(merx_gmu.gmu, **settings)


def test_the_gate_mixes_the_two_modalities():
    from merx_gmu.fusion import GatedMultimodalUnit

    fusion = GatedMultimodalUnit(audio_dim=4, text_dim=6, dim=5, dropout=0.0).eval()
    audio, text = TowerOutput(torch.randn(2, 4), None, None), TowerOutput(torch.randn(2, 6), None, None)
    torch.nn.init.constant_(fusion.gate.bias, 50.0)  # z = 1: the audio side alone
    assert torch.allclose(fusion(audio, text), torch.tanh(fusion.audio(audio.pooled)))
    torch.nn.init.constant_(fusion.gate.bias, -50.0)  # z = 0: the lyrics side alone
    assert torch.allclose(fusion(audio, text), torch.tanh(fusion.text(text.pooled)))


def test_a_bad_setting_is_refused_as_merx_would():
    with pytest.raises(PluginCheckError, match="dim"):
        check_fusion(merx_gmu.gmu, dim="wide")
