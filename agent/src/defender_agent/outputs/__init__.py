"""Outputs: where records go (file = JSON lines on disk, stdout for debugging)."""
