"""FiLM fusion: the lyrics decide how each audio channel is scaled and shifted.

A single-file local plugin, written only against merx's public API (``merx.api``): merx loads
every ``*.py`` in ``./plugins/`` of the folder it runs in (switch that off with
``--no-local-plugins`` or ``MERX_NO_LOCAL_PLUGINS=1``). experiments/fusion_film.toml uses it.
"""

from merx.api import hookimpl


@hookimpl
def register_fusions(register):
    register("film", film)


def film(audio_dim: int, text_dim: int, audio_seq_dim: int, hidden: int = 128, pooled: bool = True,
         dropout: float = 0.1):
    """FiLM: the lyrics vector scales and shifts each channel of the audio tokens.

    Feature-wise linear modulation (Perez et al., 2018): an MLP on the lyrics' pooled vector,
    Linear(text -> `hidden`) -> ReLU -> Dropout -> Linear(-> 2 x channels), gives a scale g and
    a shift b per channel of the audio tower's tokens (for vggish: the last conv block's
    channels). Each audio token a becomes ReLU((1 + g) * a + b), and the modulated tokens are
    averaged over the real ones. So the lyrics decide which audio features count, rather than
    being appended beside them. With `pooled` both towers' pooled vectors are appended too
    (out = channels + audio + text sizes; without: channels). Reads only the lyrics' pooled
    vector, so frozen lyrics need no token sequences."""
    # torch is imported here, not at the top of the file: `merx list-plugins` stays instant.
    import torch
    from torch import nn

    from merx.api import masked_mean

    class FiLMFusion(nn.Module):
        needs_sequence = False  # the text side is read through text.pooled only

        def __init__(self):
            super().__init__()
            self.film = nn.Sequential(nn.Linear(text_dim, hidden), nn.ReLU(), nn.Dropout(dropout),
                                      nn.Linear(hidden, 2 * audio_seq_dim))
            self.pooled = pooled
            self.out_dim = audio_seq_dim + (audio_dim + text_dim if pooled else 0)

        def forward(self, audio, text):
            # 1 + g: a small g starts training near the unmodulated audio features.
            scale, shift = self.film(text.pooled).unsqueeze(1).chunk(2, dim=-1)   # [B, 1, C] each
            tokens = torch.relu((1 + scale) * audio.sequence + shift)             # [B, T, C]
            parts = [masked_mean(tokens, audio.mask)]
            if self.pooled:
                parts += [audio.pooled, text.pooled]
            return torch.cat(parts, dim=1)

    return FiLMFusion()
