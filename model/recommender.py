"""MB-NMRN on external ids: id vocabularies around a window trainer."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from model.config import ModelConfig
from model.state import restore_trainer, trainer_state
from model.trainer import WindowReport, WindowTrainer
from model.vocab import IdVocab


@dataclass(frozen=True)
class Recommendation:
    item_id: str
    score: float


class Recommender:
    """The model a stream job trains: string ids in, top-K lists of string ids out."""

    def __init__(
        self,
        config: ModelConfig,
        seed: int = 0,
        device: str | torch.device = "cpu",
        *,
        trainer: WindowTrainer | None = None,
        users: IdVocab | None = None,
        items: IdVocab | None = None,
    ) -> None:
        self.trainer = trainer or WindowTrainer(config, seed, device)
        self.users = users or IdVocab()
        self.items = items or IdVocab()

    @property
    def config(self) -> ModelConfig:
        return self.trainer.config

    @property
    def windows(self) -> int:
        return self.trainer.windows

    def train_window(
        self,
        user_ids: Sequence[str],
        item_ids: Sequence[str],
        *,
        eval_candidates: int = 1000,
        eval_k: int = 10,
        eval_sample: int | None = None,
    ) -> WindowReport:
        """Map ids (new ones get fresh rows), then run one window of Algorithm 1."""
        users = torch.tensor(self.users.rows(user_ids), dtype=torch.long)
        items = torch.tensor(self.items.rows(item_ids), dtype=torch.long)
        return self.trainer.train_window(
            users, items, eval_candidates=eval_candidates, eval_k=eval_k, eval_sample=eval_sample
        )

    def recommend(
        self, user_ids: Sequence[str], k: int, exclude_seen: bool = False
    ) -> dict[str, list[Recommendation]]:
        """Top-k lists for the known users among `user_ids` (unknown ones are left out)."""
        known = [u for u in dict.fromkeys(user_ids) if u in self.users]
        if not known or self.trainer.n_items == 0:
            return {}
        rows = torch.tensor([self.users.row(u) for u in known], dtype=torch.long)
        idx, scores = self.trainer.top_k(rows, k, exclude_seen=exclude_seen)
        idx_l, scores_l = idx.cpu().tolist(), scores.cpu().tolist()
        item_of = self.items.external
        return {
            u: [Recommendation(item_of(i), s) for i, s in zip(ii, ss) if s != float("-inf")]
            for u, ii, ss in zip(known, idx_l, scores_l)
        }

    # ---- state --------------------------------------------------------------------------

    def state(self) -> tuple[dict[str, Tensor], dict[str, Any], dict[str, bytes]]:
        """(tensors, metadata, blobs): the trainer's state plus the vocabularies as JSON."""
        tensors, meta = trainer_state(self.trainer)
        blobs = {"vocab/users": self.users.to_json(), "vocab/items": self.items.to_json()}
        return tensors, meta, blobs

    @classmethod
    def from_state(
        cls,
        tensors: dict[str, Tensor],
        meta: dict[str, Any],
        blobs: dict[str, bytes],
        device: str | torch.device = "cpu",
    ) -> "Recommender":
        trainer = restore_trainer(tensors, meta, device)
        users = IdVocab.from_json(blobs["vocab/users"])
        items = IdVocab.from_json(blobs["vocab/items"])
        if len(users) != trainer.n_users or len(items) != trainer.n_items:
            raise ValueError(
                f"vocabularies ({len(users)} users, {len(items)} items) do not match the "
                f"model ({trainer.n_users} users, {trainer.n_items} items)"
            )
        return cls(trainer.config, trainer.seed, device, trainer=trainer, users=users, items=items)
