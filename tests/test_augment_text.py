"""Text augmentations: nlpaug through seeded generators, WordNet's clear message, per-variant embeddings."""

import random

import pytest
import torch
from click.testing import CliRunner

from merx.augment.plan import AugmentationError, text_chain
from merx.augment.seeding import generator
from merx.augment.text import wordnet_problem
from merx.augment.variants import text_variants
from merx.config import resolve
from merx.config.settings import AugmentSettings
from merx.data.songs import Song

LYRICS = """I walk the lonely road tonight
the city lights are burning bright
and I will dance until the morning comes
no more tears and no more sorrow
I will sing my song tomorrow
under golden skies the river runs"""


def text_items(*tables):
    """The ``[[augment.text]]`` entries of an experiment listing ``tables``, as validation resolves them."""
    return AugmentSettings.from_table(resolve({"augment": {"text": list(tables)}})["augment"]).text


def augment(table, seed=0, song="s", text=LYRICS):
    return text_chain(text_items(table))(text, generator(seed, "text", 0, song))


@pytest.mark.parametrize("name", ["word_delete", "word_swap", "spelling", "keyboard"])
def test_each_text_augmentation_changes_lyrics_reproducibly_per_seed(name):
    table = {"name": name, **({"aug_word_p": 0.3} if name == "keyboard" else {"aug_p": 0.3})}
    out = augment(table)
    assert out.split() != LYRICS.split()
    assert augment(table) == out
    assert augment(table, seed=1) != out
    assert augment(table, song="t") != out
    words, changed = LYRICS.split(), out.split()
    if name == "word_delete":
        assert len(changed) < len(words) and set(changed) <= set(words)
    elif name == "word_swap":
        assert sorted(changed) == sorted(words)
    else:  # substitutions keep the number of words
        assert len(changed) == len(words)


def test_probability_zero_leaves_the_text_alone_and_global_generators_are_untouched():
    random.seed(123)
    expected = random.random()
    random.seed(123)
    assert augment({"name": "word_delete", "p": 0.0}) == LYRICS
    augment({"name": "word_swap", "aug_p": 0.5})
    assert random.random() == expected  # nlpaug drew from seeded globals, which were put back


def test_any_offline_nlpaug_augmenter_by_name_and_a_clear_refusal_of_the_others():
    out = augment({"name": "nlpaug", "augmenter": "char.OcrAug", "params": {"aug_word_p": 0.5}})
    assert out != LYRICS and out == augment({"name": "nlpaug", "augmenter": "char.OcrAug",
                                             "params": {"aug_word_p": 0.5}})
    with pytest.raises(AugmentationError,
                       match=r"augment\.text\[0\] \(nlpaug\).*BackTranslationAug.*out of reach offline"):
        text_chain(text_items({"name": "nlpaug", "augmenter": "word.BackTranslationAug"}))
    with pytest.raises(AugmentationError, match="did you mean 'RandomWordAug'"):
        text_chain(text_items({"name": "nlpaug", "augmenter": "word.RandomWordAg"}))
    with pytest.raises(AugmentationError, match="has no parameter 'acton'"):
        text_chain(text_items({"name": "nlpaug", "augmenter": "word.RandomWordAug", "params": {"acton": "swap"}}))


def test_missing_wordnet_gives_a_clear_message_before_any_data_is_touched(tmp_path):
    if wordnet_problem() is None:
        pytest.skip("NLTK's WordNet data is installed here")
    from merx.cli import cli
    from merx.pipeline import RunError, prepare

    cfg = resolve({"data": {"cache_dir": str(tmp_path / "cache")}, "augment": {"text": [{"name": "wordnet_synonyms"}]}})
    with pytest.raises(RunError) as info:
        prepare(cfg, progress=False)
    message = str(info.value)
    assert message.startswith("augment.text[0] (wordnet_synonyms): WordNet synonyms need NLTK's WordNet data")
    assert "pip install nltk" in message and "python -m nltk.downloader wordnet" in message
    assert not (tmp_path / "cache").exists()  # stopped before generating or reading any song

    # The same through the CLI: one clear line and exit status 2, no traceback, no run recorded.
    (tmp_path / "exp.toml").write_text('[[augment.text]]\nname = "wordnet_synonyms"\n')
    result = CliRunner().invoke(cli, ["run", str(tmp_path / "exp.toml"), "--db", str(tmp_path / "r.db")])
    assert result.exit_code == 2, result.output
    assert "nltk.downloader wordnet" in result.output and "Traceback" not in result.output
    # nlpaug's own SynonymAug, reached by name, is checked the same way.
    with pytest.raises(AugmentationError, match="nltk.downloader wordnet"):
        text_chain(text_items({"name": "nlpaug", "augmenter": "word.SynonymAug"}))


def test_frozen_tower_embeds_each_lyrics_variant_once_and_caches_it(tmp_path, tiny_bert_dir):
    from merx.features.text import encode_frozen, text_variant_inputs
    from merx.pipeline import build
    from merx.plugins import get_registry

    cfg = resolve({"model": {"modalities": "text", "text": {"name": "huggingface", "model": tiny_bert_dir,
                                                            "max_length": 64}}})
    model = build(cfg, get_registry())
    songs = [Song(f"s{i}", "train", "Q1", lyrics=LYRICS.replace("road", f"road {i}")) for i in range(4)]
    chain = text_chain(text_items({"name": "word_delete", "aug_p": 0.2}, {"name": "spelling", "aug_p": 0.2}))
    texts = text_variants(songs, chain, seed=0, variants=3)
    assert texts == text_variants(songs, chain, seed=0, variants=3)
    assert texts != text_variants(songs, chain, seed=1, variants=3)
    assert len({t for variant in texts for t in variant}) == 12  # every (variant, song) differs

    cache = tmp_path / "cache"
    inputs = text_variant_inputs(model, songs, texts, "cpu", batch_size=5, cache_dir=cache)
    assert len(inputs) == 3
    for v in range(3):
        expected = encode_frozen(model.text_tower, texts[v]).pooled
        assert torch.allclose(inputs[v]["text_pooled"], expected, atol=1e-6)
    assert not torch.equal(inputs[0]["text_pooled"], inputs[1]["text_pooled"])
    assert len(list(cache.rglob("*.pt"))) == 12  # one cached embedding per distinct variant text
