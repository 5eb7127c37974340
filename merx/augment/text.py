"""Text augmentations: what a text augmentation plugin returns, nlpaug behind it, and WordNet.

A text augmentation is a callable ``aug(text, rng) -> text`` on one song's lyrics, where
``rng`` is a ``numpy.random.Generator`` seeded by (run seed, variant, song). Draw everything
from ``rng``; a library that draws from python's ``random`` or numpy's global state runs inside
``merx.augment.seeding.seeded_globals(rng)`` (as :class:`NlpaugAugmentation` does). A plugin::

    def shout(line_p: float = 0.1):
        \"\"\"Upper-case some lines.\"\"\"
        def apply(text, rng):
            return "\\n".join(l.upper() if rng.random() < line_p else l for l in text.split("\\n"))
        return apply

nlpaug's word and character augmenters join tokens with single spaces, so line breaks become
spaces in augmented lyrics (BERT-like tokenizers treat both as whitespace). What is out of reach
offline, and so not offered: back-translation and contextual substitution (they need
translation or masked-language models from the model hub; nlpaug's ``ContextualWordEmbsAug``
is also broken with transformers 5). WordNet synonyms need NLTK data that no Python package
ships: :func:`require_wordnet` says how to install it.
"""

from __future__ import annotations

import difflib
import importlib
import inspect

from merx.augment.seeding import seeded_globals

#: nlpaug augmenters that download models from the hub (or are broken with transformers 5).
NEEDS_NETWORK = {
    "ContextualWordEmbsAug": "needs a masked-language model from the model hub, and is broken with transformers 5",
    "ContextualWordEmbsForSentenceAug": "needs a language model from the model hub",
    "BackTranslationAug": "needs two translation models from the model hub",
    "AbstSummAug": "needs a summarisation model from the model hub",
    "LambadaAug": "needs a fine-tuned language model",
    "WordEmbsAug": "needs word2vec/GloVe/fastText vector files",
}

#: nlpaug augmenters that read NLTK's WordNet.
USES_WORDNET = {"SynonymAug", "AntonymAug"}

#: nlpaug's augmenter modules, as the prefix of an ``augmenter`` name ("word.RandomWordAug").
MODULES = ("word", "char", "sentence")

WORDNET_INSTALL = (
    "merx never downloads it by itself. Install it once, with network access: "
    "`pip install nltk` and then `python -m nltk.downloader wordnet omw-1.4 averaged_perceptron_tagger_eng` "
    "(or put those NLTK data packages in a folder named by the NLTK_DATA environment variable). "
    "Otherwise remove wordnet_synonyms from [[augment.text]]: the other text augmentations need no data."
)


from merx.errors import MerxError  # noqa: E402


class WordNetUnavailable(MerxError, LookupError):
    exit_code = 2

    """NLTK, its WordNet corpus or its part-of-speech tagger data is missing."""


def wordnet_problem() -> str | None:
    """What is missing for WordNet synonyms (nlpaug's SynonymAug), or None when all is there.

    nlpaug needs NLTK, the WordNet corpus, and NLTK's part-of-speech tagger (it picks synonyms
    of the word's part of speech). Checked by using them, as nlpaug will."""
    try:
        import nltk
    except ImportError:
        return "the nltk package is not installed"
    try:
        from nltk.corpus import wordnet

        wordnet.synsets("happy")
    except LookupError:
        return "NLTK's WordNet data is not installed"
    try:
        nltk.pos_tag(["happy"])
    except LookupError:
        return "NLTK's part-of-speech tagger data (averaged_perceptron_tagger_eng) is not installed"
    return None


def require_wordnet() -> None:
    """Raise :class:`WordNetUnavailable`, naming what is missing and how to install it."""
    problem = wordnet_problem()
    if problem is not None:
        raise WordNetUnavailable(f"WordNet synonyms need NLTK's WordNet data, but {problem}. {WORDNET_INSTALL}")


def nlpaug_class(augmenter: str):
    """The nlpaug augmenter class for ``"word.RandomWordAug"``, ``"char.KeyboardAug"``, ... (or the bare
    class name); a clear error for unknown names and for augmenters that cannot work offline."""
    module_name, _, cls_name = augmenter.rpartition(".")
    modules = [module_name] if module_name else list(MODULES)
    if module_name and module_name not in MODULES:
        raise ValueError(f"nlpaug augmenter {augmenter!r}: the module must be one of {', '.join(MODULES)}")
    if cls_name in NEEDS_NETWORK:
        raise ValueError(f"nlpaug's {cls_name} {NEEDS_NETWORK[cls_name]}, which merx does not fetch; "
                         "it is out of reach offline")
    from nlpaug.base_augmenter import Augmenter

    available = {}
    for name in modules:
        mod = importlib.import_module(f"nlpaug.augmenter.{name}")
        for attr in dir(mod):
            obj = getattr(mod, attr)
            if inspect.isclass(obj) and issubclass(obj, Augmenter) and attr.endswith("Aug") \
                    and attr not in NEEDS_NETWORK:
                available.setdefault(attr, obj)
    if cls_name not in available:
        close = difflib.get_close_matches(cls_name, list(available), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"nlpaug has no usable augmenter {augmenter!r}{hint}; available: "
                         f"{', '.join(sorted(available))}")
    if cls_name in USES_WORDNET:
        require_wordnet()
    return available[cls_name]


class NlpaugAugmentation:
    """An nlpaug augmenter as a merx text augmentation: ``(text, rng) -> text``.

    ``augmenter`` names the class ("word.RandomWordAug"); ``params`` are its constructor's
    arguments. nlpaug draws from python's and numpy's global generators, which are seeded from
    ``rng`` for the call."""

    def __init__(self, augmenter: str, params: dict | None = None):
        cls = nlpaug_class(augmenter)
        params = dict(params or {})
        accepted = [n for n in inspect.signature(cls.__init__).parameters if n != "self"]
        unknown = [k for k in params if k not in accepted]
        if unknown:
            raise ValueError(f"nlpaug's {cls.__name__} has no parameter {unknown[0]!r}; "
                             f"its parameters: {', '.join(accepted)}")
        self.name = cls.__name__
        self.augmenter = cls(**params)

    def __call__(self, text: str, rng) -> str:
        if not text.strip():
            return text
        with seeded_globals(rng):
            out = self.augmenter.augment(text)
        if isinstance(out, list):
            # nlpaug returns [] when it has nothing to change (e.g. too few words): keep the text.
            return out[0] if out else text
        return out

    def __repr__(self) -> str:
        return f"NlpaugAugmentation({self.name!r})"


def check_text_augmentation(obj, what: str):
    """Reject a factory result that is not a callable ``(text, rng) -> text``."""
    if not callable(obj):
        raise TypeError(f"{what} returned {type(obj).__name__}, which is not callable: a text augmentation "
                        "is a callable (text, rng) -> text")
    return obj
