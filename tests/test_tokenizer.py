"""CLIP's BPE tokenizer against OpenAI's and OpenCLIP's own tokenizers.

Reference ids: ``tests/fixtures/text_tokens.npz``, written by ``tools/peers/make_text_fixtures.py``
with clip-anytorch's ``clip.tokenize(prompts, truncate=True)`` and open_clip's
``get_tokenizer("ViT-B-32")`` on 1,200 prompts (edge cases and generated captions: long prompts,
unicode, HTML entities, emoji, odd whitespace, mixed case, numbers, punctuation).
"""

from __future__ import annotations

import numpy as np
import pytest

from imgdist.errors import ImgdistError
from imgdist.extraction import tokenizer as T
from vit_stand_in import FIXTURES


@pytest.fixture(scope="module")
def reference():
    data = np.load(FIXTURES / "text_tokens.npz")
    return {k: data[k] for k in data.files}


@pytest.fixture(scope="module")
def prompts(reference):
    return [str(p) for p in reference["prompts"]]


def test_every_id_of_every_prompt_is_openais(prompts, reference):
    assert len(prompts) >= 1000
    got = T.tokenize(prompts)
    expected = reference["openai"].astype(np.int64)
    mismatched = [prompts[i] for i in np.flatnonzero((got.ids != expected).any(axis=1))]
    assert mismatched == []
    assert got.ids.shape == (len(prompts), 77) and got.ids.dtype == np.int64


def test_openclip_flavour_matches_open_clips_tokenizer(prompts, reference):
    got = T.tokenize(prompts, specials=T.OPENCLIP_SPECIALS)
    assert np.array_equal(got.ids, reference["openclip"].astype(np.int64))
    # the two differ only on prompts holding a special-token string literally
    differ = [p for p, a, b in zip(prompts, reference["openai"], reference["openclip"]) if (a != b).any()]
    assert differ and all("text>" in p.lower() or "text|>" in p.lower() for p in differ)


def test_truncation_is_reported_and_keeps_the_end_token_last(prompts, reference):
    got = T.tokenize(prompts)
    long = reference["lengths"] > 77
    assert 50 <= long.sum() < len(prompts)  # the fixture has many long prompts, not only long ones
    assert np.array_equal(got.truncated, long) and got.n_truncated == long.sum()
    assert (got.ids[long, -1] == 49407).all() and (got.ids[:, 0] == 49406).all()
    # a prompt of exactly 77 tokens (75 words + start + end) is not cut; 76 words are
    exact = T.tokenize(["word " * 75, "word " * 76])
    assert exact.truncated.tolist() == [False, True] and exact.ids[0, -1] == exact.ids[1, -1] == 49407


def test_vocabulary_size_and_special_ids():
    tok = T.get_tokenizer()
    assert tok.vocab_size == T.VOCAB_SIZE == 49408
    assert (tok.start_id, tok.end_id) == (49406, 49407)
    assert T.tokenize("").ids[0, :3].tolist() == [49406, 49407, 0]


def test_byte_alphabet_is_a_bijection_onto_printable_symbols():
    symbols = T.byte_symbols()
    assert len(set(symbols)) == 256
    assert all(s.isprintable() and not s.isspace() for s in symbols)
    assert symbols[ord("a")] == "a" and symbols[ord(" ")] == "\u0120"  # GPT-2's well-known 'Ġ'


def test_a_damaged_vocabulary_file_is_refused(monkeypatch):
    T._merge_rules.cache_clear()
    monkeypatch.setattr(T, "VOCAB_SHA256", "0" * 64)
    try:
        with pytest.raises(ImgdistError, match=r"bpe_simple_vocab_16e6\.txt\.gz: CLIP's BPE vocabulary has SHA-256 "
                                               r"924691ac.*expected 0{64}; the installation is damaged"):
            T.Tokenizer()
    finally:
        T._merge_rules.cache_clear()
