"""``merx plugin new KIND NAME``: a ready-to-edit plugin and its test, written from templates.

A single file goes to ``plugins/NAME.py`` (merx loads it from the working directory) with its
test in ``tests/test_NAME_plugin.py``; ``--package`` writes an installable distribution
``merx-NAME/`` (pyproject with an entry point in the ``merx`` group, the module, a test).
Every template passes ``merx.testing`` unchanged and imports torch only inside its factory.
"""

from __future__ import annotations

import keyword
import os
import re
from pathlib import Path
from string import Template

from merx import __version__
from merx.errors import UsageError
from merx.hookspecs import KINDS

#: Kinds with a template, the test-kit function that checks each, and example settings for it.
TEMPLATE_KINDS = {
    "fusions": ("check_fusion", "dim=16"),
    "audio_towers": ("check_audio_tower", "channels=4"),
    "text_towers": ("check_text_tower", "dim=16"),
}

# fullmatch, not match + "$": "$" also matches before a final newline, which let "nl\n" through
# and wrote a file called "nl\n.py".
_NAME = re.compile(r"[a-z][a-z0-9_]*")



class ScaffoldError(UsageError, ValueError):
    """The plugin cannot be written as asked; the message says why and what to do."""


def normalize_kind(kind: str) -> str:
    """``fusion``, ``fusions``, ``audio-tower``, ``audio_towers`` ... -> the KINDS key."""
    from merx.hookspecs import kind as find_kind

    try:
        return find_kind(kind).name
    except KeyError as exc:
        raise ScaffoldError(exc.args[0]) from None


def _check_name(kind: str, name: str) -> None:
    if not _NAME.fullmatch(name) or keyword.iskeyword(name):
        raise ScaffoldError(f"plugin name {name!r} must be a python identifier in lower case "
                            "(letters, digits, underscores; a letter first), e.g. gated_sum")
    from merx.plugins import get_registry

    existing = get_registry().plugins[kind].get(name)
    if existing is not None:
        raise ScaffoldError(f"a {KINDS[kind].label} named {name!r} already exists "
                            f"({existing.origin_label}); choose another name")


def _class_name(name: str, suffix: str) -> str:
    camel = "".join(part.capitalize() for part in name.split("_") if part)
    return camel if camel.lower().endswith(suffix.lower()) else camel + suffix


# -- templates ------------------------------------------------------------------------------------

_HEADER = '''"""$name: a merx $label plugin (written by `merx plugin new $kind_arg $name`; edit freely).

$where Use it in an experiment:

    [$table]
    name = "$name"

Check it: python -m pytest $test_path
"""

from merx.api import hookimpl


@hookimpl
def $hook(register):
    register("$name", $name)
'''

_FUSION = _HEADER + '''

def $name(audio_dim: int, text_dim: int, dim: int = 64, dropout: float = 0.1):
    """Project both pooled vectors to `dim`, add them, ReLU, dropout (edit me: this line is the help).

    merx passes `audio_dim` and `text_dim`, the towers' pooled sizes (ask for `audio_seq_dim`
    and `text_seq_dim` too when the fusion reads token sequences). `dim` and `dropout` are
    settings of the experiment's [model.fusion] table; these are their defaults."""
    # torch is imported here, not at the top of the file: `merx list-plugins` stays instant.
    import torch
    from torch import nn

    class $cls(nn.Module):
        # Reads only pooled vectors: frozen lyrics then need no token sequences in memory.
        needs_sequence = False

        def __init__(self):
            super().__init__()
            self.audio = nn.Linear(audio_dim, dim)
            self.text = nn.Linear(text_dim, dim)
            self.dropout = nn.Dropout(dropout)
            self.out_dim = dim  # merx sizes the prediction head from this

        def forward(self, audio, text):
            # audio, text: merx.api.TowerOutput(pooled [B, D], sequence [B, T, D'], mask [B, T])
            return self.dropout(torch.relu(self.audio(audio.pooled) + self.text(text.pooled)))

    return $cls()
'''

_AUDIO = _HEADER + '''

def $name(n_mels: int, n_frames: int, channels: int = 16, out_dim: int = 32, dropout: float = 0.1):
    """Two 3x3 conv layers, one token per time step, their mean projected (edit me: this line is the help).

    merx passes `n_mels` and `n_frames`, the size of the mel spectrogram (in dB) the tower
    receives. `channels`, `out_dim` and `dropout` are settings of the experiment's
    [model.audio] table; these are their defaults."""
    # torch is imported here, not at the top of the file: `merx list-plugins` stays instant.
    import torch
    from torch import nn

    from merx.api import TowerOutput

    if n_mels < 2 or n_frames < 2:
        raise ValueError(f"$name: needs at least 2 mels and 2 frames, got {n_mels}x{n_frames}")

    class $cls(nn.Module):
        def __init__(self):
            super().__init__()
            self.convs = nn.Sequential(
                nn.Conv2d(1, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(channels, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU(),
            )
            self.project = nn.Sequential(nn.Dropout(dropout), nn.Linear(channels, out_dim))
            self.out_dim = out_dim   # pooled size: merx sizes the fusion from it
            self.seq_dim = channels  # token size, for fusions that read tokens

        def forward(self, mel):
            fmap = self.convs(mel)                      # [B, C, n_mels/2, n_frames/2]
            tokens = fmap.mean(dim=2).transpose(1, 2)   # one token per time step: [B, T, C]
            mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)  # all real
            return TowerOutput(self.project(tokens.mean(dim=1)), tokens, mask)

    return $cls()
'''

_TEXT = _HEADER + '''

def $name(max_length: int = 128, buckets: int = 20000, dim: int = 64):
    """Hashed words with trainable embeddings, mean-pooled (edit me: this line is the help).

    Needs no download: each lower-cased word is hashed into one of `buckets` embedding rows of
    size `dim`; the first `max_length` words are kept. It trains from scratch, so raise
    train.lr.text (its default, 1e-5, suits fine-tuning BERT), e.g. to 1e-3. A tower that loads
    weights can take a `pretrained` parameter: merx passes False when it needs only the
    architecture (`merx run --dry-run`)."""
    # torch is imported here, not at the top of the file: `merx list-plugins` stays instant.
    import zlib

    import torch
    from torch import nn

    from merx.api import TowerOutput, masked_mean

    class $cls(nn.Module):
        # False: merx trains the tower inside the model, from tokens, every batch. A tower that
        # does not train sets True (and requires_grad_(False)): merx then encodes each song once.
        frozen = False

        def __init__(self):
            super().__init__()
            self.embedding = nn.Embedding(buckets + 1, dim, padding_idx=0)  # row 0 is padding
            self.out_dim = self.seq_dim = dim

        def tokenize(self, texts):
            ids = torch.zeros(len(texts), max_length, dtype=torch.long)
            for i, text in enumerate(texts):
                words = text.lower().split()[:max_length]
                # crc32, not hash(): python salts string hashes differently in every process.
                ids[i, :len(words)] = torch.tensor([1 + zlib.crc32(w.encode()) % buckets for w in words],
                                                   dtype=torch.long)
            return {"input_ids": ids, "attention_mask": (ids != 0).long()}

        def forward(self, input_ids, attention_mask):
            mask = attention_mask.bool()
            tokens = self.embedding(input_ids)
            return TowerOutput(masked_mean(tokens, mask), tokens, mask)

    return $cls()
'''

_BODIES = {"fusions": (_FUSION, "Fusion"), "audio_towers": (_AUDIO, "AudioTower"), "text_towers": (_TEXT, "TextTower")}

_FILE_TEST = '''"""Tests of the $name $label plugin with merx's plugin test kit (merx.testing)."""

from pathlib import Path

from merx.testing import $check, registered

PLUGIN = Path(__file__).resolve().parent / "$rel_plugin"


def test_${name}_registers_without_warnings():
    assert "$name" in registered(PLUGIN)["$kind"]


def test_${name}_passes_the_checks():
    factory = registered(PLUGIN)["$kind"]["$name"]
    print($check(factory))  # with the default settings
    print($check(factory, $example))  # with settings, as in the experiment file
'''

_PACKAGE_TEST = '''"""Tests of the $name $label plugin with merx's plugin test kit (merx.testing)."""

import $module
from merx.testing import $check, registered


def test_${name}_registers_without_warnings():
    assert "$name" in registered($module)["$kind"]


def test_${name}_passes_the_checks():
    print($check($module.$name))  # with the default settings
    print($check($module.$name, $example))  # with settings, as in the experiment file
'''

_PYPROJECT = '''[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "$dist"
version = "0.1.0"
description = "A $label for merx: $name"
requires-python = ">=3.10"
dependencies = ["merx>=$merx_version"]

# merx loads every module named in this group; the key is the plugin's name for
# MERX_LOAD_PLUGINS, the value the module that holds the @hookimpl functions.
[project.entry-points.merx]
$name = "$module"

[tool.setuptools]
packages = ["$module"]

[tool.pytest.ini_options]
pythonpath = ["."]   # the tests import the module without installing it
testpaths = ["tests"]
'''

_README = '''# $dist

A $label plugin for [merx](https://pypi.org/project/merx/): `$name`.

    pip install .              # or: pip install -e .  while you edit it
    merx list-plugins --kind $kind
    python -m pytest           # merx's test kit checks the plugin

Use it in an experiment:

    [$table]
    name = "$name"
'''


def _render(template: str, **values) -> str:
    return Template(template).substitute(**values)


def new_plugin(kind: str, name: str, folder: str | os.PathLike = ".", package: bool = False) -> list[Path]:
    """Write a plugin of ``kind`` called ``name`` under ``folder``; returns the files written.

    Never overwrites: if a file exists, nothing is written and :class:`ScaffoldError` says which."""
    kind = normalize_kind(kind)
    if kind not in TEMPLATE_KINDS:
        raise ScaffoldError(f"no template for {kind.replace('_', ' ')} yet; templates exist for: "
                            f"{', '.join(KINDS[k].singular for k in TEMPLATE_KINDS)}")
    _check_name(kind, name)
    body, suffix = _BODIES[kind]
    check, example = TEMPLATE_KINDS[kind]
    folder = Path(folder)
    values = dict(name=name, kind=kind, hook=KINDS[kind].hook, kind_arg=KINDS[kind].singular, label=KINDS[kind].label,
                  table=KINDS[kind].table, cls=_class_name(name, suffix), check=check, example=example)

    if package:
        dist, module = f"merx-{name.replace('_', '-')}", f"merx_{name}"
        root = folder / dist
        test = root / "tests" / f"test_{name}.py"
        values.update(dist=dist, module=module, merx_version=".".join(__version__.split(".")[:2]),
                      where="Installed, merx loads it through the entry point in pyproject.toml.",
                      test_path=f"{dist}/tests")
        files = {root / "pyproject.toml": _render(_PYPROJECT, **values),
                 root / "README.md": _render(_README, **values),
                 root / module / "__init__.py": _render(body, **values),
                 test: _render(_PACKAGE_TEST, **values)}
    else:
        plugin = folder / "plugins" / f"{name}.py"
        test = folder / "tests" / f"test_{name}_plugin.py"
        values.update(where="merx loads it from ./plugins/ of the folder it runs in.",
                      test_path=f"tests/{test.name}",
                      rel_plugin=Path(os.path.relpath(plugin, test.parent)).as_posix())
        files = {plugin: _render(body, **values), test: _render(_FILE_TEST, **values)}

    existing = [str(p) for p in files if p.exists()]
    if existing:
        raise ScaffoldError(f"not overwriting {', '.join(existing)}; move it away or choose another name")
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return list(files)
