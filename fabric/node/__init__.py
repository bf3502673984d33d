"""Node processes: the trio runtime that moves KV chunks, and how the runner starts them."""
