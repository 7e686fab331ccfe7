"""Advice on configurations that are measured to be weak (benchmarks/bench_quality.py, docs/QUALITY.md).

Why a warning and not an error: a weak voting space still gives a valid DP release; it only follows the
private data less well than the other mode would. The user should know before the (long) evolve stage.
"""

from __future__ import annotations

from spti.log import logger

#: Captioners whose captions carry too little of the image for text voting to follow the private data:
#: the offline EfficientNet-Lite0 tag captioner writes three ImageNet labels ("a photo of a muzzle, ski
#: and clog"); on the Fashion-MNIST benchmark the votes of its captions recover the private class mix far
#: less well than image features do (docs/QUALITY.md).
WEAK_TEXT_VOTING_CAPTIONERS = ("efficientnet-lite0",)

_warned: set[tuple[str, str]] = set()


def warn_if_weak_voting(cfg) -> bool:
    """Log one warning (once per process and configuration) when ``cfg`` votes with text through a
    captioner known to be weak for it. Returns whether it warned."""
    voting = cfg.pe.voting
    captioner = str((cfg.captioner or {}).get("backend", ""))
    if voting != "text" or captioner not in WEAK_TEXT_VOTING_CAPTIONERS:
        return False
    key = (voting, captioner)
    if key in _warned:
        return False
    _warned.add(key)
    logger.warning(
        "pe.voting is 'text' with the %s captioner: its tag captions keep little of each image, and text "
        "voting with them follows the private data much less well than image voting on the same data "
        "(docs/QUALITY.md). Prefer --voting image (cheap with the retrieval renderer), or a real captioner "
        "(captioner.backend: hf).",
        captioner,
    )
    return True
