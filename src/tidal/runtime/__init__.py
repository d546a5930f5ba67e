"""Tidal runtime: what runs inside a training process."""
