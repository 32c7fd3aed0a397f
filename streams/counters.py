"""What the trainer counts, counted once per record even across crashes and restarts."""

from __future__ import annotations

from typing import Any

from model.trainer import WindowReport

NAMES = ("events_trained", "dead_letters", "redelivered_skipped", "filtered", "evaluated",
         "hits", "windows_rolled_back", "duplicates_skipped")


class StreamCounters:
    """Counters of the job, plus the bookkeeping that keeps checkpointed counts exact.

    A record that is counted but not trained (a dead letter, a filtered event type, a
    duplicate) may lie beyond the offsets of the next checkpoint, because it was read in
    the same poll as later events. Such records are remembered until a checkpoint covers
    them; the counts a checkpoint stores leave them out, so a restart that reads them
    again does not count them twice.
    """

    def __init__(self) -> None:
        self.values: dict[str, int] = dict.fromkeys(NAMES, 0)
        self.ndcg_sum = 0.0
        self.reasons: dict[str, int] = {}  # dead letters by reason code
        self._uncovered: list[tuple[str, int, str]] = []  # (partition key, offset, counter)

    def __getitem__(self, name: str) -> int:
        return self.values[name]

    def dead_letter(self, key: str, offset: int, code: str) -> None:
        self.values["dead_letters"] += 1
        self.reasons[code] = self.reasons.get(code, 0) + 1
        self._uncovered.append((key, offset, "dead_letters." + code))

    def skipped(self, key: str, offset: int, name: str) -> None:
        """A valid record not trained: `filtered` (event type) or `duplicates_skipped`."""
        self.values[name] += 1
        self._uncovered.append((key, offset, name))

    def redelivered(self, n: int) -> None:
        self.values["redelivered_skipped"] += n

    def trained(self, report: WindowReport) -> None:
        v = self.values
        v["events_trained"] += report.size
        v["evaluated"] += report.evaluated
        v["hits"] += report.hits
        v["windows_rolled_back"] += int(report.rolled_back)
        self.ndcg_sum += report.ndcg

    def covered(self, offsets: dict[str, int]) -> dict[str, int]:
        """The counts as of `offsets`, for a checkpoint; records beyond them stay pending."""
        out = {**self.values, "ndcg_micro": int(round(self.ndcg_sum * 1e6))}
        for code, n in self.reasons.items():
            out["dead_letters." + code] = n
        beyond = [e for e in self._uncovered if e[1] >= offsets.get(e[0], 0)]
        for _, _, name in beyond:
            out[name] -= 1
            if name.startswith("dead_letters."):
                out["dead_letters"] -= 1
        self._uncovered = beyond
        return out

    def restore(self, stored: dict[str, int]) -> None:
        """Counts from a checkpoint (written by `covered`)."""
        self.values = {name: stored.get(name, 0) for name in NAMES}
        self.ndcg_sum = stored.get("ndcg_micro", 0) / 1e6
        self.reasons = {k.split(".", 1)[1]: v for k, v in stored.items()
                        if k.startswith("dead_letters.")}
        self._uncovered = []

    def online(self, k: int) -> dict[str, Any]:
        """Cumulative online test-then-train HR@k and NDCG@k."""
        n = self.values["evaluated"]
        return {
            "evaluated": n,
            f"hr@{k}": self.values["hits"] / n if n else None,
            f"ndcg@{k}": self.ndcg_sum / n if n else None,
        }
