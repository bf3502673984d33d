"""Agentic and trace workloads (sans-IO cores): what each request or turn needs, what a
decode node's KV cache already holds, and which blocks must move over the fabric.

- `trace`: Mooncake-format request traces (arrival, lengths, prefix-block hashes);
- `sessions`: agentic sessions, chains of turns with tool-call pauses;
- `cache`: a bounded block cache per node (LRU or FIFO, pins for a time-to-live);
- `planner`: places every turn on prefill and decode nodes under a policy (`pd`, `ppd` with a
  retention), in modelled time, and says which blocks move where (`Transfer`s that carry cache
  blocks) and what each decode node makes and drops; `account` turns the KV arrival times the
  fabric measured into TTFT.

Block keys: a trace block is its hash id; a session's block is `session_key(s, i, tokens)`,
above `SESSION_KEY_BASE`, so the two never meet.
"""

from __future__ import annotations

SESSION_KEY_BASE = 1 << 40
STATE_KEY_BASE = 1 << 61  # a hybrid model's per-request state: one key per turn, never reused


def session_key(session: int, block: int, tokens: int) -> int:
    """The key of block `block` of session `session` holding `tokens` tokens (a partial last
    block that grows in the next turn is another block: other bytes)."""
    if not (0 <= session < 1 << 16 and 0 <= block < 1 << 12 and 0 < tokens < 1 << 12):
        raise ValueError(f"session {session}, block {block}, tokens {tokens}: out of range "
                         "(65,536 sessions of 4,096 blocks of at most 4,095 tokens)")
    return SESSION_KEY_BASE + (session << 24) + (block << 12) + tokens
