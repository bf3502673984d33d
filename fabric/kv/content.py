"""Deterministic chunk content and integrity digests.

Every chunk is filled from its own random stream, keyed by `(seed, request_id, index)`: two
chunks never share content, so a chunk landing at the wrong place fails verification just as a
flipped bit does, and a receiver can recompute what it should have got from the spec and the
run's seed alone.

The stream is numpy's PCG64 raw output (`BitGenerator.random_raw`), whose sequence numpy keeps
stable across releases, written as little-endian uint64 words; a tail shorter than 8 bytes takes
the low bytes of one more word. Generation runs in 1 MiB pieces, so a fill never allocates more
than that on top of the caller's buffer. Measured on the 2-vCPU development VM: ~3 GB/s for
1 MiB chunks (PCG64 raw 3.3 GB/s; Philox 2.5, SFC64 4.0; `Generator.bytes` only 0.65).

`digest` is BLAKE2b with a 16-byte digest (~1.3 GB/s on the same machine; hashlib releases the
GIL for large buffers).
"""

from __future__ import annotations

import hashlib

import numpy as np

from fabric.kv.layout import ChunkSpec

__all__ = ["DIGEST_SIZE", "chunk_digest", "digest", "fill_chunk", "verify"]

DIGEST_SIZE = 16
_PIECE_WORDS = 1 << 17  # 1 MiB of uint64 per generator call

Buffer = memoryview | np.ndarray | bytearray


def _bytes_view(buf: Buffer) -> np.ndarray:
    """A flat uint8 numpy view of `buf` (no copy)."""
    arr = buf if isinstance(buf, np.ndarray) else np.frombuffer(buf, dtype=np.uint8)
    if not arr.flags.c_contiguous:
        raise ValueError("buffer must be C-contiguous")
    return arr.reshape(-1).view(np.uint8)


def _generator(spec: ChunkSpec, seed: int) -> np.random.PCG64:
    if seed < 0 or spec.request_id < 0 or spec.index < 0:
        raise ValueError("seed, request_id and index must be >= 0")
    return np.random.PCG64(np.random.SeedSequence([seed, spec.request_id, spec.index]))


def fill_chunk(buf: Buffer, spec: ChunkSpec, seed: int) -> None:
    """Fill `buf` (exactly `spec.nbytes` bytes, writable) with the chunk's seeded content."""
    out = _bytes_view(buf)
    if out.nbytes != spec.nbytes:
        raise ValueError(f"buffer holds {out.nbytes} bytes, chunk {spec.index} needs {spec.nbytes}")
    if not out.flags.writeable:
        raise ValueError("buffer is read-only")
    gen = _generator(spec, seed)
    nwords, tail = divmod(spec.nbytes, 8)
    words = out[: nwords * 8].view("<u8")
    for start in range(0, nwords, _PIECE_WORDS):
        stop = min(start + _PIECE_WORDS, nwords)
        words[start:stop] = gen.random_raw(stop - start)
    if tail:
        last = np.array([gen.random_raw()], dtype="<u8").view(np.uint8)
        out[nwords * 8:] = last[:tail]


def digest(buf: Buffer) -> bytes:
    """16-byte BLAKE2b digest of the buffer's bytes."""
    return hashlib.blake2b(_bytes_view(buf).data, digest_size=DIGEST_SIZE).digest()


def chunk_digest(spec: ChunkSpec, seed: int) -> bytes:
    """The digest a correct copy of the chunk has (fills a scratch buffer to compute it)."""
    scratch = np.empty(spec.nbytes, dtype=np.uint8)
    fill_chunk(scratch, spec, seed)
    return digest(scratch)


def verify(buf: Buffer, spec: ChunkSpec, expected_digest: bytes) -> bool:
    """True when `buf` is exactly `spec.nbytes` long and hashes to `expected_digest`."""
    view = _bytes_view(buf)
    return view.nbytes == spec.nbytes and digest(view) == expected_digest
