"""Private Evolution (PE / Aug-PE) on captions: voting histogram, selection, generation, the loop.

Only :mod:`spti.pe.histogram` touches private data, and only through :func:`vote_histogram`, whose output
is never released before :class:`spti.privacy.NoiseSource` noise is added in :mod:`spti.pe.engine`.
"""
