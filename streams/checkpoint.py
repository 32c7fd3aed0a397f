"""Checkpoints of the model and the stream position in RocksDB, one atomic write batch each.

Layout (raw byte keys and values, nothing pickled):
    ckpt/<seq>/manifest    JSON: window, offsets, counters, trainer metadata, and for each
                           tensor and blob its key, dtype, shape, size and CRC-32
    ckpt/<seq>/t/<name>    a tensor's raw little-endian bytes
    ckpt/<seq>/b/<name>    an opaque blob (vocabularies as JSON)
The last `keep` checkpoints are kept; loading verifies every CRC and falls back to an
older checkpoint when the newest is damaged.
"""

from __future__ import annotations

import json
import logging
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rocksdict
import torch
from torch import Tensor

log = logging.getLogger(__name__)

_DTYPES = {
    torch.float32: "float32",
    torch.float64: "float64",
    torch.float16: "float16",
    torch.int64: "int64",
    torch.int32: "int32",
    torch.bool: "bool",
}
_FROM_NAME = {v: k for k, v in _DTYPES.items()}


class CheckpointError(Exception):
    """A checkpoint could not be written or none could be read back intact."""


@dataclass
class Checkpoint:
    """One consistent snapshot: model state plus where in the input stream it stands."""

    window: int  # windows trained so far; also the model version
    offsets: dict[str, int]  # "topic/partition" -> next offset to consume
    tensors: dict[str, Tensor]
    meta: dict[str, Any]  # trainer metadata (JSON-able)
    blobs: dict[str, bytes] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)
    written_at: float = 0.0
    tails: dict[str, int] = field(default_factory=dict)  # per partition: digest at offset - 1


def _seq_key(seq: int, suffix: str) -> bytes:
    return f"ckpt/{seq:012d}/{suffix}".encode()


def _encode(t: Tensor) -> tuple[bytes, dict[str, Any]]:
    t = t.detach().cpu().contiguous()
    if t.dtype not in _DTYPES:
        raise CheckpointError(f"cannot store tensors of dtype {t.dtype}")
    data = t.numpy().tobytes() if t.numel() else b""
    return data, {"dtype": _DTYPES[t.dtype], "shape": list(t.shape)}


def _decode(data: bytes, spec: dict[str, Any]) -> Tensor:
    dtype = _FROM_NAME.get(spec["dtype"])
    if dtype is None:
        raise CheckpointError(f"unknown dtype {spec['dtype']!r}")
    np_dtype = np.dtype(spec["dtype"]).newbyteorder("<")
    array = np.frombuffer(data, dtype=np_dtype).reshape(spec["shape"])
    # Copy into memory from torch's allocator: BLAS kernels may round differently on
    # differently aligned buffers, and a resumed model must compute bit for bit as before.
    out = torch.empty(spec["shape"], dtype=dtype)
    out.numpy()[...] = array
    return out


class CheckpointStore:
    """A RocksDB directory holding the last few checkpoints."""

    def __init__(self, path: str | Path, keep: int = 3, sync: bool = True) -> None:
        if keep < 1:
            raise ValueError("keep must be >= 1")
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        options = rocksdict.Options(raw_mode=True)
        options.create_if_missing(True)
        self._db = rocksdict.Rdict(str(self.path), options)
        self._write_options = rocksdict.WriteOptions()
        self._write_options.sync = sync
        self.keep = keep

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "CheckpointStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def sequences(self) -> list[int]:
        """Sequence numbers of the stored checkpoints, oldest first."""
        seqs = []
        for key in self._db.keys(from_key=b"ckpt/"):
            if not key.startswith(b"ckpt/"):
                break
            if key.endswith(b"/manifest"):
                seqs.append(int(key.split(b"/")[1]))
        return seqs

    def save(self, ckpt: Checkpoint) -> int:
        """Write `ckpt` atomically and drop all but the newest `keep`; returns its sequence."""
        seqs = self.sequences()
        seq = (seqs[-1] + 1) if seqs else 0
        batch = rocksdict.WriteBatch(raw_mode=True)
        tensors, blobs = {}, {}
        nbytes = 0
        for name, t in ckpt.tensors.items():
            data, spec = _encode(t)
            key = _seq_key(seq, f"t/{name}")
            batch.put(key, data)
            tensors[name] = {**spec, "key": key.decode(), "size": len(data), "crc": zlib.crc32(data)}
            nbytes += len(data)
        for name, data in ckpt.blobs.items():
            key = _seq_key(seq, f"b/{name}")
            batch.put(key, data)
            blobs[name] = {"key": key.decode(), "size": len(data), "crc": zlib.crc32(data)}
            nbytes += len(data)
        manifest = {
            "window": ckpt.window,
            "offsets": ckpt.offsets,
            "tails": ckpt.tails,
            "counters": ckpt.counters,
            "meta": ckpt.meta,
            "tensors": tensors,
            "blobs": blobs,
            "written_at": ckpt.written_at or time.time(),
        }
        body = json.dumps(manifest, sort_keys=True).encode()
        batch.put(_seq_key(seq, "manifest"), body + b"\n" + str(zlib.crc32(body)).encode())
        stale = [s for s in seqs if s <= seq - self.keep]
        if stale:
            batch.delete_range(_seq_key(stale[0], ""), _seq_key(stale[-1] + 1, ""))
        self._db.write(batch, self._write_options)
        log.debug("checkpoint %d written: window %d, %d bytes", seq, ckpt.window, nbytes)
        return seq

    def load_latest(self) -> Checkpoint | None:
        """The newest intact checkpoint, or None if the store is empty.

        A damaged checkpoint is logged and skipped; if none is intact, raises.
        """
        seqs = self.sequences()
        errors = []
        for seq in reversed(seqs):
            try:
                return self._load(seq)
            except (CheckpointError, ValueError, KeyError, json.JSONDecodeError) as exc:
                log.warning("checkpoint %d in %s is damaged (%s); trying an older one", seq, self.path, exc)
                errors.append(f"{seq}: {exc}")
        if seqs:
            raise CheckpointError(f"no intact checkpoint in {self.path}: " + "; ".join(errors))
        return None

    def _load(self, seq: int) -> Checkpoint:
        raw = self._db.get(_seq_key(seq, "manifest"))
        if raw is None:
            raise CheckpointError("manifest missing")
        body, _, crc = raw.rpartition(b"\n")
        if not crc.isdigit() or zlib.crc32(body) != int(crc):
            raise CheckpointError("manifest checksum mismatch")
        manifest = json.loads(body)
        tensors = {n: _decode(self._read(spec), spec) for n, spec in manifest["tensors"].items()}
        blobs = {n: self._read(spec) for n, spec in manifest["blobs"].items()}
        return Checkpoint(
            window=int(manifest["window"]),
            offsets={k: int(v) for k, v in manifest["offsets"].items()},
            tensors=tensors,
            meta=manifest["meta"],
            blobs=blobs,
            counters={k: int(v) for k, v in manifest["counters"].items()},
            written_at=float(manifest["written_at"]),
            tails={k: int(v) for k, v in manifest.get("tails", {}).items()},
        )

    def _read(self, spec: dict[str, Any]) -> bytes:
        data = self._db.get(spec["key"].encode())
        if data is None:
            raise CheckpointError(f"{spec['key']} missing")
        if len(data) != spec["size"] or zlib.crc32(data) != spec["crc"]:
            raise CheckpointError(f"{spec['key']} checksum mismatch")
        return data
