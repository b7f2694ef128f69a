"""The features document is generated from the declarations."""

from __future__ import annotations

from features import docs


def test_features_doc_is_generated_from_the_declarations() -> None:
    assert docs.DOC.read_text(encoding="utf-8") == docs.render(), "run `python -m features.docs`"
