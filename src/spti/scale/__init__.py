"""Running spti beyond one process: today sharded nearest-neighbour voting on a Ray cluster
(:mod:`spti.scale.ray_voting`, ``pe.nn_backend: ray``).

Ray is an optional extra (``pip install 'spti[ray]'``): nothing here imports it at module level, so
``import spti`` and ``spti privacy`` never load it; only a run that asks for Ray does.
"""
