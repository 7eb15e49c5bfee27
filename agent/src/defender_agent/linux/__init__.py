"""Thin kernel and file-format interfaces shared by collectors (core)."""
