"""Explanation sentences: composed from facts, tokenized to a controlled vocabulary, parsed back.

A package's decoder learns one canonical caption per defect type,
``"crack, <size>, <place>"``: the words are the model's, the slots are
filled from the measured facts (the length in millimetres, the place on the
part or its recipe zone), so the model never invents a number or a name and
identical findings read identically (``canonical``, ``fill``). Packages made
before slots learned captions composed from a defect's type, its place on the
part and its size class (measured on the mask with ``models.data.geometry``),
in one of several phrasings (``compose``)::

    small spot in the upper left
    there is a large scratch in the lower centre
    in the centre right: medium contamination
    crack (medium), upper right

The same module parses any sentence back into its facts (``parse``), which is
what the grounding guard checks. Tokens are lower-case words and the
punctuation marks ``, : ( )``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from models.data.geometry import ALL_LOCATIONS, SIZE_CLASSES, SizeClass, size_class

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIALS: tuple[str, ...] = (PAD, BOS, EOS, UNK)
"""Special tokens; their ids are 0..3 in every vocabulary."""

SIZE_WORDS: dict[str, SizeClass] = {
    "small": "small",
    "minor": "small",
    "medium": "medium",
    "moderate": "medium",
    "large": "large",
    "big": "large",
}
"""Every word that names a size class."""

_TEMPLATES: tuple[str, ...] = (
    "{size} {type} in the {loc}",
    "there is a {size} {type} in the {loc}",
    "in the {loc}: {size} {type}",
    "{type} ({size}), {loc}",
    "a {size} {type} in the {loc} of the part",
    "{loc}: {type}, {size}",
)
_GLUE_WORDS = ("there", "is", "a", "in", "the", "of", "part")
_TOKEN_RE = re.compile(r"<[a-z]+>|[0-9]+(?:\.[0-9]+)?|[a-z0-9\-]+|[,:()]")

SLOT_SIZE, SLOT_PLACE = "<size>", "<place>"
"""Slots a package's decoder writes where the measured length and the place go: the
model chooses the words, the facts fill in every number and name."""
SLOTS: tuple[str, ...] = (SLOT_SIZE, SLOT_PLACE)


def type_phrase(defect_type: str) -> str:
    """How a defect type is written in a sentence (``missing_feature`` -> ``missing feature``)."""
    return defect_type.replace("_", " ").lower()


def compose(
    defect_type: str, location: str, size: SizeClass, rng: np.random.Generator | None = None
) -> str:
    """One caption for the facts; ``rng`` picks a phrasing (``None``: the first, canonical one)."""
    k = 0 if rng is None else int(rng.integers(len(_TEMPLATES)))
    words = list(SIZE_WORDS)
    options = [w for w in words if SIZE_WORDS[w] == size]
    word = options[0] if rng is None else options[int(rng.integers(len(options)))]
    return _TEMPLATES[k].format(size=word, type=type_phrase(defect_type), loc=location)


def canonical(defect_type: str) -> str:
    """The one caption a slotted package's decoder learns: ``"crack, <size>, <place>"``."""
    return f"{type_phrase(defect_type)}, {SLOT_SIZE}, {SLOT_PLACE}"


def is_canonical(sentence: str, defect_type: str) -> bool:
    """True when ``sentence`` is exactly the canonical caption of ``defect_type``: its type,
    each slot once, and no word of its own (no number, place or size it could invent)."""
    return tokenize(sentence) == tokenize(canonical(defect_type))


def fill(sentence: str, size: str, place: str) -> str:
    """``sentence`` with its slots replaced by the measured ``size`` and ``place`` text."""
    return sentence.replace(SLOT_SIZE, size).replace(SLOT_PLACE, place)


def tokenize(text: str) -> list[str]:
    """Split a sentence into lower-case word and punctuation tokens."""
    return _TOKEN_RE.findall(text.lower())


def detokenize(tokens: Iterable[str]) -> str:
    """Join tokens into a sentence, with punctuation attached the usual way."""
    text = " ".join(t for t in tokens if t not in SPECIALS)
    text = re.sub(r" ([,:)])", r"\1", text)
    return text.replace("( ", "(")


@dataclass(frozen=True, slots=True)
class Vocabulary:
    """A controlled vocabulary: token strings by id, the specials first."""

    tokens: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.tokens[: len(SPECIALS)] != SPECIALS:
            raise ValueError(f"a vocabulary must start with {SPECIALS}")
        if len(set(self.tokens)) != len(self.tokens):
            raise ValueError("a vocabulary must not repeat a token")

    @classmethod
    def build(cls, defect_types: Sequence[str], extra_texts: Iterable[str] = ()) -> Vocabulary:
        """The vocabulary of the composed captions for ``defect_types`` plus ``extra_texts``."""
        words: list[str] = []
        seen = set(SPECIALS)

        def add(text: str) -> None:
            for t in tokenize(text):
                if t not in seen:
                    seen.add(t)
                    words.append(t)

        for text in [*_GLUE_WORDS, *SIZE_WORDS, *ALL_LOCATIONS, ",", ":", "(", ")", *SLOTS]:
            add(text)
        for t in defect_types:
            add(type_phrase(t))
        for text in extra_texts:
            add(text)
        return cls(SPECIALS + tuple(words))

    @property
    def pad_id(self) -> int:
        """Id of the padding token."""
        return 0

    @property
    def bos_id(self) -> int:
        """Id of the begin-of-sentence token."""
        return 1

    @property
    def eos_id(self) -> int:
        """Id of the end-of-sentence token."""
        return 2

    def encode(self, text: str, max_len: int) -> list[int]:
        """``[BOS, tokens..., EOS]`` padded to ``max_len``; unknown words map to ``<unk>``.

        Raises ``ValueError`` when the sentence does not fit in ``max_len``.
        """
        index = {t: i for i, t in enumerate(self.tokens)}
        ids = [self.bos_id, *(index.get(t, 3) for t in tokenize(text)), self.eos_id]
        if len(ids) > max_len:
            raise ValueError(f"caption {text!r} has {len(ids)} tokens, more than {max_len}")
        return ids + [self.pad_id] * (max_len - len(ids))

    def decode(self, ids: Iterable[int]) -> str:
        """The sentence for ``ids``, stopping at the first end-of-sentence token."""
        out: list[str] = []
        for i in ids:
            if i == self.eos_id:
                break
            if 0 <= i < len(self.tokens):
                out.append(self.tokens[i])
        return detokenize(out)


@dataclass(frozen=True, slots=True)
class SentenceFacts:
    """The facts a sentence states; ``None`` where it states none."""

    defect_type: str | None
    location: str | None
    size: SizeClass | None


def parse(text: str, defect_types: Sequence[str]) -> SentenceFacts:
    """Read the type, location and size class back out of ``text``.

    Types and locations are matched longest phrase first ("upper centre"
    before "centre"), so each word is read once. A fact stated twice with
    different values reads as ``None`` (a contradiction is not a fact).
    """
    tokens = tokenize(text)
    used = [False] * len(tokens)

    def find(phrases: Sequence[str]) -> str | None:
        found: set[str] = set()
        for phrase in sorted(phrases, key=lambda p: -len(tokenize(p))):
            words = tokenize(phrase)
            n = len(words)
            for i in range(len(tokens) - n + 1):
                if tokens[i : i + n] == words and not any(used[i : i + n]):
                    used[i : i + n] = [True] * n
                    found.add(phrase)
        return found.pop() if len(found) == 1 else None

    by_phrase = {type_phrase(t): t for t in defect_types}
    phrase = find(list(by_phrase))
    location = find(ALL_LOCATIONS)
    sizes = {SIZE_WORDS[t] for t in tokens if t in SIZE_WORDS}
    for i, t in enumerate(tokens[:-1]):  # a measured length, "3.2 mm"
        if tokens[i + 1] == "mm" and t[:1].isdigit():
            sizes.add(size_class(float(t)))
    size = sizes.pop() if len(sizes) == 1 else None
    return SentenceFacts(by_phrase[phrase] if phrase else None, location, size)


__all__ = [
    "BOS",
    "EOS",
    "PAD",
    "SIZE_CLASSES",
    "SIZE_WORDS",
    "SLOTS",
    "SLOT_PLACE",
    "SLOT_SIZE",
    "SentenceFacts",
    "Vocabulary",
    "canonical",
    "compose",
    "detokenize",
    "fill",
    "is_canonical",
    "parse",
    "tokenize",
    "type_phrase",
]
