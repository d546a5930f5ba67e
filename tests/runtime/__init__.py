"""Tests of tidal.runtime: the pieces, and real multi-process runs."""
