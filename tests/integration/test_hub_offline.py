"""A hub model with the hub out of reach fails (or loads from the cache) after one probe, not
after huggingface_hub's five retries. Attempts are counted on a local socket, not timed."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
REPO_ID = "azr-test/tiny-cached"


class BrokenHub:
    """A TCP endpoint that accepts each connection and closes it at once (a hub that is down
    behind a proxy), counting the attempts."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.attempts = 0
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.getsockname()[1]}"

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.server.accept()
            except OSError:
                return
            self.attempts += 1
            connection.close()

    def close(self) -> None:
        self.server.close()


def _load_tokenizer(name: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """A fresh process (huggingface_hub reads its settings at import) loads the tokenizer."""
    code = textwrap.dedent(f"""
        from azr.config.schema import ModelConfig
        from azr.engine.models.sources import ModelSourceError
        from azr.engine.models.tokenizer import load_tokenizer
        try:
            tokenizer = load_tokenizer(ModelConfig(name_or_path={name!r}))
        except ModelSourceError as exc:
            print("REFUSED", exc)
        else:
            print("LOADED", len(tokenizer))
    """)
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full_env, timeout=300)


@pytest.fixture(scope="module")
def hf_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An HF cache holding one model's config and a small tokenizer, laid out as
    huggingface_hub writes it."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    home = tmp_path_factory.mktemp("hf-home")
    repo = home / "hub" / f"models--{REPO_ID.replace('/', '--')}"
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    vocab = {"<unk>": 0, "<eos>": 1, "def": 2, "f": 3}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", eos_token="<eos>").save_pretrained(snapshot)
    (snapshot / "config.json").write_text('{"model_type": "llama"}', encoding="utf-8")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40, encoding="utf-8")
    return home


def test_an_unreachable_hub_costs_one_attempt_then_a_clear_error(hf_home: Path) -> None:
    hub = BrokenHub()
    try:
        result = _load_tokenizer("azr-test/not-cached", {"HF_HOME": str(hf_home), "HF_ENDPOINT": hub.url})
    finally:
        hub.close()
    assert "REFUSED" in result.stdout, result.stdout + result.stderr
    assert "cannot reach the Hugging Face hub" in result.stdout and "not in the local cache" in result.stdout
    assert hub.attempts == 1 and "Retry" not in result.stderr


def test_a_refused_connection_is_a_clear_error_without_retries(hf_home: Path) -> None:
    result = _load_tokenizer("azr-test/not-cached", {"HF_HOME": str(hf_home), "HF_ENDPOINT": "http://127.0.0.1:9"})
    assert "REFUSED" in result.stdout and "http://127.0.0.1:9" in result.stdout, result.stdout + result.stderr
    assert "Retry" not in result.stderr


def test_offline_mode_refuses_an_uncached_model_without_any_request(hf_home: Path) -> None:
    hub = BrokenHub()
    try:
        result = _load_tokenizer("azr-test/not-cached", {"HF_HOME": str(hf_home), "HF_ENDPOINT": hub.url,
                                                         "HF_HUB_OFFLINE": "1"})
    finally:
        hub.close()
    assert "REFUSED" in result.stdout and "HF_HUB_OFFLINE is set" in result.stdout, result.stdout + result.stderr
    assert hub.attempts == 0


def test_a_cached_model_loads_from_the_cache_when_the_hub_is_down(hf_home: Path) -> None:
    hub = BrokenHub()
    try:
        result = _load_tokenizer(REPO_ID, {"HF_HOME": str(hf_home), "HF_ENDPOINT": hub.url})
    finally:
        hub.close()
    assert "LOADED" in result.stdout, result.stdout + result.stderr
    # the probe, and huggingface_hub's own single fetch of its agent registry (never retried)
    assert hub.attempts <= 2 and "Retry" not in result.stderr
