"""Built-in audio towers."""

from merx import hookimpl


@hookimpl
def register_audio_towers(register):
    register("vggish", vggish)


def vggish(n_mels: int, n_frames: int, channels: list = (64, 128, 256, 512), convs_per_block: int = 1,
           batchnorm: bool = True, attention: str = "none", dropout: float = 0.5, hidden: int = 256,
           out_dim: int = 64):
    """The notebooks' VGG-style CNN on the mel spectrogram, trained from scratch.

    One block per entry of `channels`; each block has `convs_per_block` 3x3 convs (conv ->
    BatchNorm -> ReLU; the second conv keeps the channel count), blocks end in MaxPool 2x2 and
    the last in a global average pool. Then Dropout -> Linear(-> hidden) -> ReLU -> Dropout ->
    Linear(-> out_dim). `attention` adds the notebooks' feature gate x * sigmoid(MLP(x)):
    "hidden" on the hidden vector (where MODEL_3..5 put it), "output" on the output vector
    (where the code review describes it), "none" (MODEL_2). Token sequence for attention
    fusions: the last block's feature map, one token per time-frequency cell.
    MODEL_2/3/5: convs_per_block 1; MODEL_4: 2; MODEL_3..5: attention "hidden"."""
    from merx.models.vggish import VGGishTower

    return VGGishTower(n_mels, n_frames, channels=channels, convs_per_block=convs_per_block,
                       batchnorm=batchnorm, attention=attention, dropout=dropout, hidden=hidden,
                       out_dim=out_dim)
