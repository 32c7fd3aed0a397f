"""External ids (strings) to embedding rows and back, growing as new ids appear."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence


class IdVocab:
    """Append-only map from external id to a dense row number, in order of first sight."""

    def __init__(self, ids: Iterable[str] = ()) -> None:
        self._ids: list[str] = []
        self._rows: dict[str, int] = {}
        for i in ids:
            self.add(i)

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, external: object) -> bool:
        return external in self._rows

    def add(self, external: str) -> int:
        row = self._rows.get(external)
        if row is None:
            row = len(self._ids)
            if not isinstance(external, str):
                raise TypeError(f"ids are strings, got {type(external).__name__}")
            self._rows[external] = row
            self._ids.append(external)
        return row

    def rows(self, externals: Sequence[str]) -> list[int]:
        """Rows of `externals`, adding unseen ids at the end."""
        get, add = self._rows.get, self.add
        return [r if (r := get(e)) is not None else add(e) for e in externals]

    def row(self, external: str) -> int | None:
        return self._rows.get(external)

    def external(self, row: int) -> str:
        return self._ids[row]

    def externals(self, rows: Iterable[int]) -> list[str]:
        ids = self._ids
        return [ids[r] for r in rows]

    def to_json(self) -> bytes:
        return json.dumps(self._ids, ensure_ascii=False, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> "IdVocab":
        ids = json.loads(data)
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise ValueError("a vocabulary is a JSON array of strings")
        vocab = cls(ids)
        if len(vocab) != len(ids):
            raise ValueError("vocabulary has duplicate ids")
        return vocab
