"""merx-gmu: a gated multimodal unit fusion for merx (an example third-party plugin).

Found through the entry point ``gmu = "merx_gmu"`` in the ``merx`` group (pyproject.toml).
This module only registers; the torch code lives in ``merx_gmu.fusion`` and is imported when
a model is built.
"""

from merx.api import hookimpl

__version__ = "0.1.0"


@hookimpl
def register_fusions(register):
    register("gmu", gmu)


def gmu(audio_dim: int, text_dim: int, dim: int = 64, dropout: float = 0.1):
    """Gated multimodal unit: a learned per-feature gate mixes the audio and lyrics vectors.

    Arevalo et al. (2017): h_audio = tanh(W_a a), h_text = tanh(W_t t), z = sigmoid(W_z [a; t]),
    out = z * h_audio + (1 - z) * h_text, then dropout. Each of the `dim` output features
    decides, per song, how much it listens to the audio and how much to the lyrics; unlike
    concatenation the output size stays `dim`. Reads the pooled vectors only."""
    from merx_gmu.fusion import GatedMultimodalUnit

    return GatedMultimodalUnit(audio_dim, text_dim, dim=dim, dropout=dropout)
