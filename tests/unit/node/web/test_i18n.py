"""The viewer's language: asked for, remembered, from the browser, or the default."""

from __future__ import annotations

import pytest

from node.web.i18n import LANGUAGES, pick, words


@pytest.mark.parametrize(
    ("query", "cookie", "accept", "default", "expected"),
    [
        ("de", "ja", "en", "en", "de"),
        (None, "ja", "de", "en", "ja"),
        ("xx", None, "fr-FR,de;q=0.8,en;q=0.5", "en", "de"),
        (None, None, "ja-JP", "de", "ja"),
        (None, None, "fr", "de", "de"),
        (None, None, None, "xx", "en"),
    ],
)
def test_language_order(
    query: str | None, cookie: str | None, accept: str | None, default: str, expected: str
) -> None:
    """?lang= wins, then the cookie, then the first supported Accept-Language, then the
    configured default (English when that is unknown)."""
    assert pick(query, cookie, accept, default) == expected


def test_every_label_exists_in_every_language_and_differs_from_the_key() -> None:
    """Each language has the same labels, none empty; German and Japanese are not English."""
    en, de, ja = (words(lang) for lang in LANGUAGES)
    assert en.keys() == de.keys() == ja.keys()
    assert all(en.values()) and all(de.values()) and all(ja.values())
    assert en["review"] != de["review"] != ja["review"]
