"""spti: differentially private synthetic images via private textual intermediaries.

The pipeline (Wang, Lin, Yu, Zhang 2025, "SPTI"):

1. caption every private image with an image-to-text model;
2. evolve a population of synthetic captions with DP Private Evolution (Aug-PE), private samples voting
   with Gaussian noise for the nearest candidates;
3. render the DP captions with a text-to-image model;
4. evaluate and account.

Only step 2 touches private data in a way that is released, and it is the only step that spends privacy
budget. Heavy libraries (torch, diffusers, transformers) are imported lazily, so ``import spti`` is cheap.
"""

from __future__ import annotations

from spti._version import __version__

__all__ = ["__version__", "run"]


def run(config, **kwargs):  # noqa: ANN001 - thin lazy wrapper
    """Run the whole pipeline for a config (a :class:`spti.config.Config`, a dict or a YAML path).

    Does what ``spti run`` does; see :func:`spti.pipeline.run`. The pipeline is imported on the first
    call, not with the package: ``import spti`` stays cheap and lower floors never pull in the stages.
    """
    from spti.pipeline import run as _run

    return _run(config, **kwargs)
