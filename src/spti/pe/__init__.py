"""Private Evolution (PE / Aug-PE) on captions: the loop (engine), candidate embedders, generation,
voting histogram and selection. Knows nothing of run folders: :mod:`spti.stages.evolve` wires it.

Only :mod:`spti.pe.histogram` touches private data, and only through :func:`vote_histogram`, whose output
is never released before :class:`spti.privacy.NoiseSource` noise is added in :mod:`spti.pe.engine`.
"""
