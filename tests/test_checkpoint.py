"""Tests for streams.checkpoint: checkpoints of model and stream position in a real RocksDB."""

from __future__ import annotations

import json
import logging
import pickle
import random
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import rocksdict
import torch

from model.config import ModelConfig
from model.recommender import Recommender
from model.state import trainer_state
from streams.checkpoint import Checkpoint, CheckpointError, CheckpointStore

SUPPORTED_DTYPES = (
    torch.float32, torch.float64, torch.float16, torch.int64, torch.int32, torch.bool,
)


def sample_tensors() -> dict[str, torch.Tensor]:
    """Tensors of every supported dtype, plus empty, 0-d and non-contiguous ones."""
    gen = torch.Generator().manual_seed(7)
    tensors: dict[str, torch.Tensor] = {}
    for dtype in SUPPORTED_DTYPES:
        name = str(dtype).removeprefix("torch.")
        if dtype.is_floating_point:
            full = torch.randn(3, 4, generator=gen).to(dtype)
            scalar = torch.tensor(-1.5, dtype=dtype)
        elif dtype == torch.bool:
            full = torch.rand(3, 4, generator=gen) > 0.5
            scalar = torch.tensor(True)
        else:
            full = torch.randint(-(2**30), 2**30, (3, 4), generator=gen).to(dtype)
            scalar = torch.tensor(-42, dtype=dtype)
        tensors[f"{name}/full"] = full
        tensors[f"{name}/scalar"] = scalar
        tensors[f"{name}/empty"] = torch.empty(0, 5, dtype=dtype)
    tensors["int64/extremes"] = torch.tensor([-(2**63), 2**63 - 1, 0])
    tensors["float32/special"] = torch.tensor([float("inf"), float("-inf"), -0.0, 1e-45])
    tensors["float32/transposed"] = torch.arange(12, dtype=torch.float32).reshape(3, 4).t()
    return tensors


def make_checkpoint(window: int, **fields: object) -> Checkpoint:
    base = dict(
        window=window,
        offsets={"interactions/0": 10 * window, "interactions/1": 10 * window + 3},
        tensors={"w": torch.full((2, 2), float(window))},
        meta={"window": window, "nested": {"list": [1, 2.5, "x"], "none": None}},
        blobs={"vocab/users": json.dumps(["u1", "u2"]).encode()},
        counters={"events_trained": 64 * window, "dead_letters": window},
        written_at=1_700_000_000.0 + window,
    )
    base.update(fields)
    return Checkpoint(**base)  # type: ignore[arg-type]


def assert_same_tensors(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert got.keys() == want.keys()
    for name, expected in want.items():
        actual = got[name]
        assert actual.dtype == expected.dtype, name
        assert actual.shape == expected.shape, name
        assert torch.equal(actual, expected), name
        if expected.is_floating_point():  # -0.0 == 0.0, so compare the sign bits too
            assert torch.equal(torch.signbit(actual), torch.signbit(expected)), name


def raw_db(path: Path) -> rocksdict.Rdict:
    """The store's RocksDB opened directly, as raw bytes; close the store first."""
    return rocksdict.Rdict(str(path), rocksdict.Options(raw_mode=True))


@contextmanager
def two_checkpoints_to_damage(path: Path) -> Iterator[rocksdict.Rdict]:
    """Save checkpoints 0 and 1 (windows 1 and 2) at `path`, then give the store's RocksDB
    opened raw, to damage; it is closed afterwards."""
    with CheckpointStore(path) as store:
        store.save(make_checkpoint(1))
        store.save(make_checkpoint(2))
    db = raw_db(path)
    try:
        yield db
    finally:
        db.close()


def tensor_key(seq: int, name: str) -> bytes:
    return f"ckpt/{seq:012d}/t/{name}".encode()


def manifest_key(seq: int) -> bytes:
    return f"ckpt/{seq:012d}/manifest".encode()


# ---- round trip ------------------------------------------------------------------------


def test_round_trip_of_every_field(tmp_path: Path) -> None:
    tensors = sample_tensors()
    blobs = {
        "vocab/users": json.dumps(["u1", "ü"]).encode(),
        "empty": b"",
        "binary": bytes(range(256)),
    }
    ckpt = make_checkpoint(4, tensors=tensors, blobs=blobs)

    with CheckpointStore(tmp_path / "ckpt") as store:
        seq = store.save(ckpt)
        loaded = store.load_latest()

    assert seq == 0
    assert loaded is not None
    assert_same_tensors(loaded.tensors, tensors)
    assert loaded.blobs == blobs
    assert loaded.window == 4
    assert loaded.offsets == ckpt.offsets
    assert loaded.counters == ckpt.counters
    assert loaded.meta == ckpt.meta
    assert loaded.written_at == ckpt.written_at


def test_loaded_tensors_are_writable_and_independent_of_the_store(tmp_path: Path) -> None:
    with CheckpointStore(tmp_path / "ckpt") as store:
        store.save(make_checkpoint(1))
        first = store.load_latest()
        assert first is not None
        first.tensors["w"].add_(100.0)
        second = store.load_latest()
    assert second is not None
    assert torch.equal(second.tensors["w"], torch.full((2, 2), 1.0))


def test_written_at_defaults_to_the_save_time(tmp_path: Path) -> None:
    with CheckpointStore(tmp_path / "ckpt") as store:
        store.save(make_checkpoint(1, written_at=0.0))
        loaded = store.load_latest()
    assert loaded is not None and loaded.written_at > 1_600_000_000.0


def test_blobs_are_returned_as_bytes_never_unpickled(tmp_path: Path) -> None:
    payload = pickle.dumps({"would": "be an object if unpickled"})
    with CheckpointStore(tmp_path / "ckpt") as store:
        store.save(make_checkpoint(1, blobs={"pickle": payload}))
        loaded = store.load_latest()
    assert loaded is not None
    assert type(loaded.blobs["pickle"]) is bytes
    assert loaded.blobs["pickle"] == payload


def test_unsupported_dtype_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    bad = {"ok": torch.zeros(2), "z": torch.zeros(2, dtype=torch.complex64)}
    with CheckpointStore(tmp_path / "ckpt") as store:
        store.save(make_checkpoint(1))
        with pytest.raises(CheckpointError, match="complex64"):
            store.save(make_checkpoint(2, tensors=bad))
        assert store.sequences() == [0]
        loaded = store.load_latest()
    assert loaded is not None and loaded.window == 1


def test_keep_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="keep"):
        CheckpointStore(tmp_path / "ckpt", keep=0)


# ---- retention and reopening -----------------------------------------------------------


def test_keep_bounds_the_checkpoints_stored_to_the_newest(tmp_path: Path) -> None:
    with CheckpointStore(tmp_path / "ckpt", keep=2) as store:
        seqs = [store.save(make_checkpoint(w)) for w in range(1, 6)]
        assert seqs == [0, 1, 2, 3, 4]
        assert store.sequences() == [3, 4]
        loaded = store.load_latest()
    assert loaded is not None and loaded.window == 5

    db = raw_db(tmp_path / "ckpt")
    try:
        stored = [k for k in db.keys() if k.startswith(b"ckpt/")]
    finally:
        db.close()
    kept = (b"000000000003", b"000000000004")
    assert stored and all(k.split(b"/")[1] in kept for k in stored)


def test_reopened_store_loads_the_latest_and_continues_the_sequence(tmp_path: Path) -> None:
    path = tmp_path / "ckpt"
    tensors = sample_tensors()
    with CheckpointStore(path, keep=3) as store:
        store.save(make_checkpoint(1))
        store.save(make_checkpoint(2, tensors=tensors))

    with CheckpointStore(path, keep=3) as reopened:
        assert reopened.sequences() == [0, 1]
        loaded = reopened.load_latest()
        assert loaded is not None
        assert loaded.window == 2
        assert_same_tensors(loaded.tensors, tensors)
        assert reopened.save(make_checkpoint(3)) == 2


def test_empty_store_loads_none(tmp_path: Path) -> None:
    with CheckpointStore(tmp_path / "ckpt") as store:
        assert store.sequences() == []
        assert store.load_latest() is None


# ---- damage ----------------------------------------------------------------------------


def test_corrupt_tensor_falls_back_to_the_previous_checkpoint(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "ckpt"
    with two_checkpoints_to_damage(path) as db:
        good = db[tensor_key(1, "w")]
        db[tensor_key(1, "w")] = bytes(b ^ 0xFF for b in good)  # same length, other bytes

    with caplog.at_level(logging.WARNING, logger="streams.checkpoint"):
        with CheckpointStore(path) as store:
            loaded = store.load_latest()
    assert loaded is not None and loaded.window == 1
    assert torch.equal(loaded.tensors["w"], torch.full((2, 2), 1.0))
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "checkpoint 1" in warnings[0].getMessage()
    assert "checksum" in warnings[0].getMessage()


def test_missing_tensor_value_falls_back_to_the_previous_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "ckpt"
    with two_checkpoints_to_damage(path) as db:
        del db[tensor_key(1, "w")]
    with CheckpointStore(path) as store:
        loaded = store.load_latest()
    assert loaded is not None and loaded.window == 1


@pytest.mark.parametrize("cut", [1, 10, -1, -3])
def test_truncated_manifest_falls_back_to_the_previous_checkpoint(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, cut: int
) -> None:
    path = tmp_path / "ckpt"
    with two_checkpoints_to_damage(path) as db:
        raw = db[manifest_key(1)]
        db[manifest_key(1)] = raw[:cut]

    with caplog.at_level(logging.WARNING, logger="streams.checkpoint"):
        with CheckpointStore(path) as store:
            loaded = store.load_latest()
    assert loaded is not None and loaded.window == 1
    assert any("checkpoint 1" in r.getMessage() for r in caplog.records
               if r.levelno == logging.WARNING)


def test_all_checkpoints_damaged_raises_naming_each(tmp_path: Path) -> None:
    path = tmp_path / "ckpt"
    with two_checkpoints_to_damage(path) as db:
        db[tensor_key(0, "w")] = b"\x00" * 16
        db[manifest_key(1)] = db[manifest_key(1)][:-2]

    with CheckpointStore(path) as store:
        with pytest.raises(CheckpointError) as excinfo:
            store.load_latest()
    message = str(excinfo.value)
    assert "no intact checkpoint" in message
    assert str(path) in message
    assert "0: " in message and "1: " in message
    assert "manifest checksum mismatch" in message


# ---- the real model --------------------------------------------------------------------


def synthetic_window(rng: random.Random, size: int) -> tuple[list[str], list[str]]:
    users = [f"user-{rng.randrange(40)}" for _ in range(size)]
    items = [f"item-{rng.randrange(120)}" for _ in range(size)]
    return users, items


def test_recommender_resumed_from_a_checkpoint_trains_bit_identically(tmp_path: Path) -> None:
    config = ModelConfig(window=64)
    rng = random.Random(3)
    windows = [synthetic_window(rng, config.window) for _ in range(4)]
    original = Recommender(config, seed=5)
    for users, items in windows[:3]:
        original.train_window(users, items, eval_candidates=50)

    tensors, meta, blobs = original.state()
    with CheckpointStore(tmp_path / "ckpt") as store:
        store.save(Checkpoint(window=original.windows, offsets={"interactions/0": 192},
                              tensors=tensors, meta=meta, blobs=blobs))
    with CheckpointStore(tmp_path / "ckpt") as store:
        ckpt = store.load_latest()
    assert ckpt is not None
    resumed = Recommender.from_state(ckpt.tensors, ckpt.meta, ckpt.blobs)

    users, items = windows[3]
    report_a = original.train_window(users, items, eval_candidates=50)
    report_b = resumed.train_window(users, items, eval_candidates=50)

    want, want_meta = trainer_state(original.trainer)
    got, got_meta = trainer_state(resumed.trainer)
    assert got_meta == want_meta
    assert got.keys() == want.keys()
    for name in want:
        assert torch.equal(got[name], want[name]), name
    assert (report_b.d_loss, report_b.g_loss, report_b.hits) == (
        report_a.d_loss, report_a.g_loss, report_a.hits,
    )
    assert resumed.recommend(users[:5], 5) == original.recommend(users[:5], 5)


def test_recommender_restored_in_process_shares_no_optimizer_state() -> None:
    """from_state(*state()) without a store must not share Adam moments with the original."""
    config = ModelConfig(window=64)
    rng = random.Random(4)
    windows = [synthetic_window(rng, config.window) for _ in range(3)]
    original = Recommender(config, seed=1)
    for users, items in windows[:2]:
        original.train_window(users, items, eval_candidates=50)
    copy = Recommender.from_state(*original.state())
    before, _ = trainer_state(copy.trainer)
    before = {name: t.clone() for name, t in before.items()}

    original.train_window(*windows[2], eval_candidates=50)

    after, _ = trainer_state(copy.trainer)
    changed = [name for name in before if not torch.equal(before[name], after[name])]
    assert changed == []
