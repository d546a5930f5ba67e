"""One prepared training run: the context ``prepare`` creates and what drives it.

* :mod:`.context`: :class:`RuntimeContext` (device, process group, hooks, signals, status,
  checkpoint manager) and :class:`Position`;
* :mod:`.prepare`: filling a context in from the user's objects, and resuming;
* :mod:`.loop`: micro-batches, step boundaries, the consistent cut, ``epochs``;
* :mod:`.state`: what a checkpoint holds, saving it, and putting it back;
* :mod:`.status`: worker 0's ``status.json`` writer (schema: :mod:`tidal.launch.status`);
* :mod:`.dist_setup`: devices and the process group;
* :mod:`.objects`: sorting what ``prepare`` was given into kinds.

``context`` imports none of the others that build on it (``prepare``, ``loop``, ``state``).
"""
