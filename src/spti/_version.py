"""spti's version, in a module of its own.

Why not in ``spti/__init__.py``: lower floors (the run folder writes the version into every manifest) must
not import the package root, which offers the lazy ``spti.run`` entry point over the whole pipeline. Keep
it equal to ``version`` in pyproject.toml.
"""

__version__ = "0.1.0"
