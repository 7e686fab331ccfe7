"""The three recipes of the ``hf`` captioner: how each kind of model is asked for a caption, and how its
answer is cleaned.

- ``image-to-text``: processor(images, [prefix]) -> generate -> decode; for BLIP, BLIP-2, GIT,
  VisionEncoderDecoder (ViT+GPT-2) and other captioning heads. A prompt is a caption *prefix*, and the
  model echoes it: it is stripped from the output.
- ``florence``: Florence-2: a task token as prompt; task and location tokens are stripped.
- ``chat``: models whose processor has a chat template (Qwen2-VL, LLaVA, SmolVLM ...): one user turn with
  the image and the prompt, padded on the left.

Why apart from the backend (``hf.py``, which loads the model and batches the images): these are the parts
that differ per model family and grow with it; they need no loaded model to be read or tested.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Sequence
from typing import Any

from PIL import Image

from spti.errors import BackendError, ConfigError

MODES = ("auto", "image-to-text", "florence", "chat")
DEFAULT_CHAT_PROMPT = "Describe the image."
DEFAULT_FLORENCE_TASK = "<MORE_DETAILED_CAPTION>"
FLORENCE_CAPTION_TASKS = ("<CAPTION>", "<DETAILED_CAPTION>", "<MORE_DETAILED_CAPTION>")

#: model types whose processors have no chat template and that caption from the image alone
IMAGE_TO_TEXT_TYPES = frozenset({"blip", "blip-2", "git", "vision-encoder-decoder", "pix2struct"})
#: Florence-2's task and location tokens, and the sequence markers its tokenizer leaves in
TASK_TOKEN_RE = re.compile(r"</?s>|<pad>|<loc_\d+>|<(?:[A-Z]+_)*[A-Z]+>")
_SENTENCE_END_RE = re.compile(r"[.!?][\"')\]]?(?=\s|$)")


def detect_mode(
    mode: str, *, model_name: str, model_type: str, is_florence: bool, has_chat_template: bool
) -> str:
    """The recipe for a model: ``mode`` itself when given (checked against the model), else guessed from
    its ``model_type`` and whether its processor has a chat template."""
    if mode == "auto":
        if is_florence:
            return "florence"
        if model_type in IMAGE_TO_TEXT_TYPES:
            return "image-to-text"
        return "chat" if has_chat_template else "image-to-text"
    if mode == "chat" and not has_chat_template:
        raise ConfigError(
            f"captioner 'hf': {model_name!r} has no chat template, so mode 'chat' cannot work; use mode "
            "'image-to-text' (or 'auto')"
        )
    if mode == "florence" and not is_florence:
        raise ConfigError(f"captioner 'hf': mode 'florence' needs a Florence-2 model, got {model_type!r}")
    return mode


def default_prompt(mode: str, prompt: str | None) -> str | None:
    """The prompt a recipe uses: Florence-2 a caption task token, chat models an instruction,
    image-to-text models none (unconditional captioning) unless a prefix is given."""
    if mode == "florence":
        task = prompt or DEFAULT_FLORENCE_TASK
        if task not in FLORENCE_CAPTION_TASKS:
            raise ConfigError(
                f"captioner 'hf': for Florence-2 the prompt must be one of {', '.join(FLORENCE_CAPTION_TASKS)}"
            )
        return task
    if mode == "chat":
        return prompt if prompt and prompt.strip() else DEFAULT_CHAT_PROMPT
    return prompt if prompt and prompt.strip() else None


def model_inputs(
    mode: str, processor: Any, images: list[Image.Image], prompt: str | None, transformers_version: str
) -> Any:
    """The processor's tensors for one batch of RGB images, per recipe."""
    n = len(images)
    if mode == "chat":
        params = inspect.signature(processor.apply_chat_template).parameters
        if "return_dict" not in params:
            raise BackendError(
                f"captioner 'hf': chat VLMs need a newer transformers than {transformers_version}; upgrade it"
            )
        conversations = [
            [{"role": "user", "content": [{"type": "image", "image": img}, {"type": "text", "text": prompt}]}]
            for img in images
        ]
        # prompts differ in length when images give different numbers of image tokens (Qwen2-VL's dynamic
        # resolution, Idefics3's tiling): pad (on the left, see HFCaptioner._prepare_mode)
        pad = {"processor_kwargs": {"padding": True}} if "processor_kwargs" in params else {"padding": True}
        return processor.apply_chat_template(
            conversations,
            add_generation_prompt=True,
            tokenize=True,
            return_dict=True,
            return_tensors="pt",
            **pad,
        )
    if mode == "florence":
        return processor(text=[prompt] * n, images=images, return_tensors="pt")
    if prompt:
        return processor(images=images, text=[prompt] * n, return_tensors="pt")
    return processor(images=images, return_tensors="pt")


def finish_caption(text: str, truncated: bool, trim_incomplete: bool) -> str:
    """Collapse whitespace; if generation ran out of tokens, drop the unfinished last sentence (when there is
    a finished one before it) so the caption does not end mid-word."""
    text = " ".join(text.split())
    if truncated and trim_incomplete:
        ends = [m.end() for m in _SENTENCE_END_RE.finditer(text)]
        if ends and ends[-1] < len(text):
            text = text[: ends[-1]].rstrip()
    return text


def strip_prefix(text: str, prefixes: Sequence[str]) -> str:
    """Remove a leading echo of the prompt, ignoring case and whitespace differences (BLIP's uncased BERT
    tokenizer gives back "a photography of" for "A photography of")."""
    for prefix in prefixes:
        words = prefix.split()
        if not words:
            continue
        m = re.match(r"\s*" + r"\s*".join(re.escape(w) for w in words), text, flags=re.IGNORECASE)
        if m:
            return text[m.end() :].lstrip(" :,;-")
    return text


def clean_caption(text: str, mode: str, echoes: Sequence[str], truncated: bool, trim_incomplete: bool) -> str:
    """One decoded output -> the caption: recipe-specific tokens or prompt echo removed, then finished."""
    if mode == "florence":
        text = TASK_TOKEN_RE.sub(" ", text)
    elif echoes:
        text = strip_prefix(text, echoes)
    return finish_caption(text, truncated, trim_incomplete)
