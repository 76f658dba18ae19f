"""CLIP's text tokenizer: OpenAI's byte-level BPE (Radford et al. 2021), written for imgdist.

A prompt becomes token ids in these steps, each as OpenAI's ``clip.tokenize`` does it, since the
text tower was trained on exactly these ids:

1. clean: ``ftfy.fix_text`` (mojibake, odd quotes, control characters), HTML entities unescaped
   twice (``&amp;amp;`` -> ``&``), outer whitespace stripped, every run of Unicode whitespace made
   one space, lower case;
2. split into pieces by one regular expression: the two special-token strings, the contractions
   ``'s 't 're 've 'm 'll 'd``, runs of letters (``\\p{L}+``), single digits (``\\p{N}``) and runs
   of anything else that is neither a letter, a digit nor whitespace (``regex``'s Unicode classes);
3. each piece as UTF-8 bytes, each byte as one of 256 printable symbols (GPT-2's reversible byte
   alphabet), the last symbol marked as a word end (``</w>``);
4. byte-pair merges: repeatedly join the adjacent pair that comes earliest in the merge list,
   every occurrence left to right, until no adjacent pair is in the list;
5. the vocabulary: the 256 byte symbols, the same with ``</w>``, the 48,894 merge results, then
   ``<|startoftext|>`` (49406) and ``<|endoftext|>`` (49407): 49,408 ids.

The ids are framed by the start and end tokens and padded with 0 to the context of 77. A longer
prompt is cut to 77 ids whose last is the end token (``clip.tokenize(..., truncate=True)``);
:class:`Tokens` says which prompts were cut. The text tower reads the feature at the end token,
found as the position of the largest id, as OpenAI's code does.

A prompt that contains a special-token string itself (``"<|endoftext|>"``) gets that special id,
in OpenAI's tokenizer as here. OpenCLIP's tokenizer names its special tokens ``<start_of_text>`` and
``<end_of_text>`` (same ids); ``Tokenizer(specials=OPENCLIP_SPECIALS)`` follows it, which matters
only for prompts containing one of these strings.

The merge list is OpenAI's ``bpe_simple_vocab_16e6.txt.gz`` (MIT licence), shipped in
``imgdist/data`` so that tokenizing works offline; its SHA-256 is checked when it is first read.
"""

from __future__ import annotations

import gzip
import hashlib
import html
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Sequence

import numpy as np

from ..errors import ImgdistError

__all__ = ["Tokenizer", "Tokens", "tokenize", "get_tokenizer", "CONTEXT_LENGTH", "VOCAB_SIZE",
           "OPENAI_SPECIALS", "OPENCLIP_SPECIALS", "VOCAB_FILE", "VOCAB_SHA256"]

CONTEXT_LENGTH = 77
VOCAB_SIZE = 49408
N_MERGES = VOCAB_SIZE - 2 * 256 - 2  # 48,894 merge rules: the rest of the vocabulary is bytes and specials
OPENAI_SPECIALS = ("<|startoftext|>", "<|endoftext|>")
OPENCLIP_SPECIALS = ("<start_of_text>", "<end_of_text>")
VOCAB_FILE = "bpe_simple_vocab_16e6.txt.gz"
VOCAB_SHA256 = "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"
END_OF_WORD = "</w>"


def byte_symbols() -> list[str]:
    """The printable symbol of each byte value 0..255 (GPT-2's alphabet).

    Bytes that are printable Latin-1 characters other than space and soft hyphen stand for
    themselves; the other 68 take the characters U+0100, U+0101, ... in byte order. The BPE then
    never sees whitespace or control characters."""
    printable = {*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)}
    symbols, spare = [], 0x100
    for value in range(256):
        if value in printable:
            symbols.append(chr(value))
        else:
            symbols.append(chr(spare))
            spare += 1
    return symbols


def _vocabulary_order(symbols: list[str]) -> list[str]:
    """The 256 byte symbols in the order of the vocabulary's first ids: the printable ones in byte
    order, then the 68 substitutes (this is how OpenAI's table lists them)."""
    return [s for s in symbols if ord(s) < 0x100] + [s for s in symbols if ord(s) >= 0x100]


@lru_cache(maxsize=1)
def _merge_rules() -> tuple[tuple[str, str], ...]:
    """OpenAI's merge list, read from the shipped file after checking its SHA-256."""
    ref = resources.files("imgdist") / "data" / VOCAB_FILE
    try:
        raw = ref.read_bytes()
    except OSError as exc:
        raise ImgdistError(f"{ref}: CLIP's BPE vocabulary is missing from the installation ({exc.strerror}); "
                           "reinstall imgdist") from None
    digest = hashlib.sha256(raw).hexdigest()
    if digest != VOCAB_SHA256:
        raise ImgdistError(f"{ref}: CLIP's BPE vocabulary has SHA-256 {digest}, expected {VOCAB_SHA256}; "
                           "the installation is damaged: reinstall imgdist")
    lines = gzip.decompress(raw).decode("utf-8").split("\n")
    # line 0 is a version header; the tokenizer uses the first N_MERGES rules after it
    rules = tuple(tuple(line.split()) for line in lines[1:1 + N_MERGES])
    if len(rules) != N_MERGES or any(len(rule) != 2 for rule in rules):  # pragma: no cover - hash checked
        raise ImgdistError(f"{ref}: not a list of {N_MERGES} BPE merge rules")
    return rules


@dataclass(frozen=True)
class Tokens:
    """Token ids of a batch of prompts: ``ids`` N x context (int64, 0-padded); ``truncated`` N bools:
    the prompt had more tokens than the context holds and was cut (end token kept last)."""

    ids: np.ndarray
    truncated: np.ndarray

    @property
    def n_truncated(self) -> int:
        return int(self.truncated.sum())

    def __len__(self) -> int:
        return len(self.ids)


class Tokenizer:
    """OpenAI CLIP's BPE tokenizer. ``tokenizer(prompts)`` -> :class:`Tokens`."""

    def __init__(self, specials: tuple[str, str] = OPENAI_SPECIALS, context_length: int = CONTEXT_LENGTH):
        import regex

        if context_length < 2:
            raise ValueError(f"context_length must be at least 2 (start and end tokens), not {context_length}")
        self.specials = tuple(specials)
        self.context_length = int(context_length)
        self._bytes = byte_symbols()
        rules = _merge_rules()
        vocabulary = _vocabulary_order(self._bytes)
        vocabulary += [s + END_OF_WORD for s in vocabulary]
        vocabulary += ["".join(rule) for rule in rules]
        self._ids = {token: i for i, token in enumerate(vocabulary)}
        self.start_id, self.end_id = len(vocabulary), len(vocabulary) + 1
        self._special_ids = {self.specials[0]: self.start_id, self.specials[1]: self.end_id}
        self._rank = {rule: i for i, rule in enumerate(rules)}
        specials_pattern = "|".join(regex.escape(s) for s in self.specials)
        self._pieces = regex.compile(specials_pattern + r"|'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|[^\s\p{L}\p{N}]+",
                                     regex.IGNORECASE)
        self._spaces = regex.compile(r"\s+")
        self._cache: dict[str, tuple[int, ...]] = {}

    @property
    def vocab_size(self) -> int:
        return self.end_id + 1

    def clean(self, text: str) -> str:
        """Step 1: the text as the BPE sees it."""
        import ftfy

        text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
        return self._spaces.sub(" ", text).strip().lower()

    def _merge(self, piece: str) -> tuple[int, ...]:
        """Steps 3-5 for one piece (cached: prompt sets repeat their words)."""
        found = self._cache.get(piece)
        if found is not None:
            return found
        symbols = [self._bytes[b] for b in piece.encode("utf-8")]
        symbols[-1] += END_OF_WORD
        rank = self._rank
        while len(symbols) > 1:
            best, best_rank = None, None
            for pair in zip(symbols, symbols[1:]):
                r = rank.get(pair)
                if r is not None and (best_rank is None or r < best_rank):
                    best, best_rank = pair, r
            if best is None:
                break
            joined, merged, i = best[0] + best[1], [], 0
            while i < len(symbols):
                if i + 1 < len(symbols) and symbols[i] == best[0] and symbols[i + 1] == best[1]:
                    merged.append(joined)
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            symbols = merged
        ids = tuple(self._ids[s] for s in symbols)
        if len(self._cache) < 100_000:
            self._cache[piece] = ids
        return ids

    def encode(self, text: str) -> list[int]:
        """The ids of one prompt, without the start and end tokens and without truncation."""
        out: list[int] = []
        for piece in self._pieces.findall(self.clean(text)):
            special = self._special_ids.get(piece)
            if special is not None:
                out.append(special)
            else:
                out.extend(self._merge(piece))
        return out

    def __call__(self, texts: str | Sequence[str]) -> Tokens:
        if isinstance(texts, str):
            texts = [texts]
        n, width = len(texts), self.context_length
        ids = np.zeros((n, width), dtype=np.int64)
        truncated = np.zeros(n, dtype=bool)
        for row, text in enumerate(texts):
            tokens = [self.start_id, *self.encode(text), self.end_id]
            if len(tokens) > width:
                tokens = tokens[:width - 1] + [self.end_id]
                truncated[row] = True
            ids[row, :len(tokens)] = tokens
        return Tokens(ids, truncated)


@lru_cache(maxsize=4)
def get_tokenizer(specials: tuple[str, str] = OPENAI_SPECIALS, context_length: int = CONTEXT_LENGTH) -> Tokenizer:
    """A shared tokenizer (building one reads the vocabulary and takes ~0.1 s)."""
    return Tokenizer(specials, context_length)


def tokenize(texts: str | Sequence[str], context_length: int = CONTEXT_LENGTH,
             specials: tuple[str, str] = OPENAI_SPECIALS) -> Tokens:
    """Prompts -> :class:`Tokens`, as OpenAI's ``clip.tokenize(texts, context_length, truncate=True)``
    (plus which prompts were truncated)."""
    return get_tokenizer(tuple(specials), context_length)(texts)
