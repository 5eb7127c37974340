"""Built-in text augmentations, through nlpaug (imported only when a run uses them).

`aug_p` is the share of words changed in a song's lyrics; `aug_max` caps their number (0, the
default, means no cap: lyrics run to hundreds of words). Back-translation and contextual
substitution need models from the model hub and are not offered (see ``merx.augment.text``)."""

from __future__ import annotations

from merx import hookimpl


@hookimpl
def register_text_augmentations(register):
    register("word_delete", word_delete)
    register("word_swap", word_swap)
    register("spelling", spelling)
    register("keyboard", keyboard)
    register("wordnet_synonyms", wordnet_synonyms)
    register("nlpaug", nlpaug)


def _nlpaug(augmenter: str, **params):
    from merx.augment.text import NlpaugAugmentation

    # 0 = no cap: nlpaug reads a false aug_max as "none", and 0 survives a TOML round trip (None does not).

    return NlpaugAugmentation(augmenter, params)


def word_delete(aug_p: float = 0.1, aug_max: int = 0):
    """Delete a random `aug_p` share of the words (nlpaug RandomWordAug, action "delete")."""
    return _nlpaug("word.RandomWordAug", action="delete", aug_p=aug_p, aug_max=aug_max)


def word_swap(aug_p: float = 0.1, aug_max: int = 0):
    """Swap a random `aug_p` share of the words with a neighbour (nlpaug RandomWordAug, action "swap")."""
    return _nlpaug("word.RandomWordAug", action="swap", aug_p=aug_p, aug_max=aug_max)


def spelling(aug_p: float = 0.1, aug_max: int = 0):
    """Replace an `aug_p` share of the words by common misspellings (nlpaug SpellingAug; its
    dictionary ships with nlpaug)."""
    return _nlpaug("word.SpellingAug", aug_p=aug_p, aug_max=aug_max)


def keyboard(aug_word_p: float = 0.1, aug_char_p: float = 0.1, aug_word_max: int = 0):
    """Typos: in an `aug_word_p` share of the words, replace an `aug_char_p` share of the characters
    by a neighbour on a QWERTY keyboard (nlpaug KeyboardAug)."""
    return _nlpaug("char.KeyboardAug", aug_word_p=aug_word_p, aug_char_p=aug_char_p, aug_word_max=aug_word_max,
                   aug_char_max=0)


def wordnet_synonyms(aug_p: float = 0.1, aug_max: int = 0):
    """Replace an `aug_p` share of the words by WordNet synonyms of the same part of speech (nlpaug SynonymAug).

    Needs NLTK with its WordNet and part-of-speech tagger data, which no Python package ships and
    merx never downloads: `pip install nltk`, then `python -m nltk.downloader wordnet omw-1.4
    averaged_perceptron_tagger_eng` (or set NLTK_DATA). Checked before training starts."""
    from merx.augment.text import require_wordnet

    require_wordnet()
    return _nlpaug("word.SynonymAug", aug_src="wordnet", aug_p=aug_p, aug_max=aug_max)


def nlpaug(augmenter: str, params: dict = {}):  # noqa: B006 (never mutated; {} survives a TOML round trip)
    """Any nlpaug augmenter that works offline, by name, with its parameters.

    `augmenter`: "module.Class", e.g. "char.OcrAug", "char.RandomCharAug", "word.SplitAug",
    "word.RandomWordAug"; `params`: its constructor's arguments, e.g. { action = "crop" }.
    Augmenters that need models from the hub are refused with the reason."""
    from merx.augment.text import NlpaugAugmentation

    return NlpaugAugmentation(augmenter, params)
