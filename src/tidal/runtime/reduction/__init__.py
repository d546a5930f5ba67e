"""The fixed-order sum over logical ranks that makes results bitwise the same for every P.

* :mod:`.tree`: the summation tree, fixed by W alone (pure functions);
* :mod:`.cross_worker`: the strategies that finish the tree across workers (ordered
  halving/doubling, all-gather, native all-reduce);
* :mod:`.overlap`: the ordered halving in buckets, overlapped with the last backward.
"""
