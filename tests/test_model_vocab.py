"""Tests for model.vocab: external ids to rows and back."""

from __future__ import annotations

import pytest

from model.vocab import IdVocab


def test_rows_assign_unseen_ids_in_order_of_first_sight() -> None:
    vocab = IdVocab(["a", "b"])
    assert vocab.rows(["b", "c", "a", "c", "d"]) == [1, 2, 0, 2, 3]
    assert len(vocab) == 4 and "c" in vocab and "z" not in vocab
    assert vocab.row("d") == 3 and vocab.row("z") is None
    assert vocab.externals([3, 0, 2]) == ["d", "a", "c"] and vocab.external(1) == "b"
    assert vocab.add("b") == 1 and len(vocab) == 4


def test_json_round_trip_keeps_rows() -> None:
    vocab = IdVocab()
    ids = ["17850", "13047", "é-ünïcode", "", "12583", "a,b\"c"]
    vocab.rows(ids)
    back = IdVocab.from_json(vocab.to_json())
    assert len(back) == len(vocab)
    assert [back.row(i) for i in ids] == [vocab.row(i) for i in ids] == list(range(len(ids)))
    assert back.rows(["new"]) == [len(ids)]


def test_bad_ids_and_bad_json_are_rejected() -> None:
    with pytest.raises(TypeError):
        IdVocab().add(17850)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="duplicate"):
        IdVocab.from_json(b'["a", "b", "a"]')
    with pytest.raises(ValueError, match="array of strings"):
        IdVocab.from_json(b'["a", 1]')
    with pytest.raises(ValueError, match="array of strings"):
        IdVocab.from_json(b'{"a": 0}')
