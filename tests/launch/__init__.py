"""Tests of tidal.launch: contracts in one process, and real supervised processes."""
