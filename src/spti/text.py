"""Text helpers: cleaning LLM output into a caption, or rejecting it with a reason.

Small instruct models wrap answers ("Sure! Here is a caption: ..."), quote them, refuse, loop on one word or
leave the blanks unfilled. Each reject has a reason name; the counts (never the texts) go to the run's
stats so a user can see when a model is unsuitable.

A low floor of the package (imports nothing from spti): PE's generation and the offline captioner's LLM
rewording both clean with it.
"""

from __future__ import annotations

import re

_PREFIX = re.compile(
    r"^\s*(?:(?:sure|certainly|of course|okay|ok|here(?:'s| is| are)?|absolutely)\b[^:\n.!]*[:.!]\s*)+",
    re.IGNORECASE,
)
_LABEL = re.compile(
    r"^\s*(?:[*#>\-\s]*)(?:new |rephrased |rewritten |filled[- ]in |completed |final |image )?"
    r"(?:caption|description|answer|sentence|output|text)\s*(?:\d+)?\s*[:\-–]\s*",
    re.IGNORECASE,
)
_REFUSAL = re.compile(
    r"\b(?:i'?m sorry|i am sorry|i cannot|i can'?t|i'm unable|i am unable|as an ai|language model|"
    r"i apologi[sz]e|cannot assist|can't assist|not able to (?:help|provide))\b",
    re.IGNORECASE,
)
_SPECIAL = re.compile(r"<\|[^|>]*\|>|</?s>|\[/?INST\]|<end_of_turn>|<start_of_turn>")
_QUOTES = "\"'“”‘’`*_ "


def clean_caption(raw: str | None, *, min_words: int = 3, max_words: int = 120) -> tuple[str | None, str]:
    """Return ``(caption, "ok")`` or ``(None, reason)``.

    Reasons: ``empty``, ``refusal``, ``too_short``, ``too_long``, ``unfilled_blanks``, ``degenerate``
    (repetition), ``not_text``.
    """
    if raw is None:
        return None, "empty"
    text = _SPECIAL.sub(" ", str(raw)).replace("\r", "\n").strip()
    if not text:
        return None, "empty"
    if _REFUSAL.search(text):
        return None, "refusal"
    text = _PREFIX.sub("", text)
    lines = [ln.strip() for ln in text.split("\n") if ln.strip()]
    # A preamble line ending with ':' followed by the caption: take what follows.
    while len(lines) > 1 and lines[0].endswith(":"):
        lines = lines[1:]
    if not lines:
        return None, "empty"
    text = lines[0]
    text = _LABEL.sub("", text)
    text = text.strip(_QUOTES).strip()
    text = re.sub(r"\s+", " ", text)
    if not text:
        return None, "empty"
    if re.search(r"(?:^|\s)_+(?:\s|$|[.,;])", text) or "___" in text:
        return None, "unfilled_blanks"
    words = text.split()
    letters = sum(ch.isalpha() for ch in text)
    if letters < 0.5 * len(text.replace(" ", "")):
        return None, "not_text"
    if len(words) < min_words:
        return None, "too_short"
    if len(words) > max_words:
        return None, "too_long"
    lowered = [w.lower().strip(".,;:!?") for w in words]
    if len(words) >= 8 and len(set(lowered)) / len(lowered) < 0.4:
        return None, "degenerate"
    if re.search(r"\b(\w+)(?:\s+\1\b){3,}", text, re.IGNORECASE):
        return None, "degenerate"
    if text[-1] not in ".!?":
        text += "."
    return text[0].upper() + text[1:], "ok"
