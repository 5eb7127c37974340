"""A dry run: what a run builds, without data, and one forward pass on a generated batch."""

from __future__ import annotations

from merx.config.settings import Experiment
from merx.errors import RunError
from merx.pipeline import as_experiment, build, build_augmentations

#: Lyrics for a dry run's forward pass: two lines of different length, so padding is exercised.
SAMPLE_LYRICS = ("I walk alone down the empty road tonight",
                 "Sunshine, sunshine on my face, and the whole town is singing along")


def sample_batch(model, exp: Experiment, batch_size: int = 2) -> dict:
    """A generated batch of the experiment's shapes (no data is read): a mel spectrogram on the
    experiment's dB scale, and the text tower's tokens of :data:`SAMPLE_LYRICS`."""
    import torch

    from merx.features.crop import n_frames
    from merx.models.contracts import running

    batch = {}
    if model.uses_audio:
        g = torch.Generator().manual_seed(0)
        shape = (batch_size, 1, exp.features.n_mels, n_frames(exp.features))
        batch["mel"] = -exp.features.top_db * torch.rand(shape, generator=g)  # between the floor and 0 dB
    if model.uses_text:
        texts = [SAMPLE_LYRICS[i % len(SAMPLE_LYRICS)] for i in range(batch_size)]
        tower = model.text_tower
        # Tokens even for a frozen tower, so that the model runs the tower itself, under its checks.
        with running(model.plugins.get("text"), "text tower", tower, "tokenize"):
            tokens = tower.tokenize(texts)
        batch.update(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
    return batch


def dry_run(cfg: dict | Experiment) -> list:
    """Build what a run builds, without data: the augmentations, then the model with its
    architecture only (``pretrained=False``: no weights are loaded, so an experiment naming a hub
    model works before it was ever downloaded), then ONE forward pass on :func:`sample_batch`.

    Returns the parameter counts per part (``merx.models.params.ParamRow``). A plugin whose
    code fails or returns the wrong shape raises ``PluginRuntimeError`` naming it."""
    import torch

    from merx.models.params import parameter_counts
    from merx.plugins import get_registry

    exp = as_experiment(cfg)
    registry = get_registry()
    build_augmentations(exp, registry)  # a missing WordNet or a bad mask width shows here too
    model = build(exp, registry, pretrained=False).eval()
    with torch.no_grad():
        out = model(sample_batch(model, exp, 2))
    if tuple(out.shape) != (2, exp.out_dim):
        raise RunError(f"the model returned shape [{', '.join(map(str, out.shape))}] for a batch of 2; "
                       f"a {exp.task} model must return [2, {exp.out_dim}]", exit_code=1)
    return parameter_counts(model)
