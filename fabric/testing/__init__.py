"""Test helpers: run netem tests natively or inside a user-mode Linux guest."""
