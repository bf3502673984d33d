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

SESSION_KEY_BASE = 1 << 58
STATE_KEY_BASE = 1 << 61  # a hybrid model's per-request state: one key per turn, never reused
SESSIONS_MAX = 1 << 16
SESSION_BLOCKS_MAX = 1 << 20  # blocks in one session's context
BLOCK_TOKENS_MAX = (1 << 20) - 1


def session_key(session: int, block: int, tokens: int) -> int:
    """The key of block `block` of session `session` holding `tokens` tokens (a partial last
    block that grows in the next turn is another block: other bytes)."""
    if not (0 <= session < SESSIONS_MAX and 0 <= block < SESSION_BLOCKS_MAX
            and 0 < tokens <= BLOCK_TOKENS_MAX):
        raise ValueError(f"session {session}, block {block}, tokens {tokens}: out of range "
                         f"({SESSIONS_MAX:,} sessions of {SESSION_BLOCKS_MAX:,} blocks of at "
                         f"most {BLOCK_TOKENS_MAX:,} tokens)")
    return SESSION_KEY_BASE + (session << 40) + (block << 20) + tokens
