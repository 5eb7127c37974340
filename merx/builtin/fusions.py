"""Built-in fusions."""

from merx import hookimpl


@hookimpl
def register_fusions(register):
    register("concat", concat)
    register("audio_attention", audio_attention)
    register("combined_attention", combined_attention)
    register("cross_attention", cross_attention)


def concat(audio_dim: int, text_dim: int):
    """Concatenate the two pooled vectors (the notebooks' fusion; 64 + 768 = 832 with BERT)."""
    from merx.models.fusions import ConcatFusion

    return ConcatFusion(audio_dim, text_dim)


def audio_attention(audio_dim: int, text_dim: int, reduction: int = 4):
    """Feature gate x * sigmoid(MLP(x)) on the audio vector, then concatenate.

    The MLP is Linear(d -> d/reduction) -> ReLU -> Linear(-> d): one weight per audio feature."""
    from merx.models.fusions import AudioAttentionFusion

    return AudioAttentionFusion(audio_dim, text_dim, reduction)


def combined_attention(audio_dim: int, text_dim: int, reduction: int = 4):
    """Concatenate, then the feature gate on the joint vector (the review's "Alternative 2").

    Each feature's weight depends on both modalities."""
    from merx.models.fusions import CombinedAttentionFusion

    return CombinedAttentionFusion(audio_dim, text_dim, reduction)


def cross_attention(audio_dim: int, text_dim: int, audio_seq_dim: int, text_seq_dim: int, dim: int = 128,
                    heads: int = 4, dropout: float = 0.1, pooled: bool = True):
    """Bidirectional cross-attention between audio time-frequency tokens and lyric tokens.

    Both token sequences are projected to `dim`; audio tokens attend to text tokens and text
    tokens to audio tokens (`heads` heads, padding masked, residual + LayerNorm), each side
    averaged over its real tokens. With `pooled` the two towers' pooled vectors, projected to
    `dim`, are appended (out = 4*dim; without: 2*dim). Needs token sequences, so frozen text
    embeddings are stored per token (more memory than pooled-only fusions)."""
    from merx.models.fusions import CrossAttentionFusion

    return CrossAttentionFusion(audio_seq_dim, text_seq_dim, audio_dim, text_dim, dim=dim, heads=heads,
                                dropout=dropout, pooled=pooled)
