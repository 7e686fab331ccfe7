"""Role contracts are enforced: a backend missing its role's method cannot be built, and every role has a
``batch_size`` default that backends override from their own option. No model is loaded here."""

from __future__ import annotations

import numpy as np
import pytest

from spti.errors import BackendError, ConfigError, InputError
from spti.models.base import Backend
from spti.models.captioner import Captioner
from spti.models.image_embedder import ImageEmbedder
from spti.models.llm import LLM
from spti.models.llm import REGISTRY as LLM_REGISTRY
from spti.models.registry import Registry
from spti.models.renderer import Renderer
from spti.models.text_embedder import TextEmbedder


class _Captioner(Captioner):
    def caption(self, images):
        return ["x"] * len(images)


class _LLM(LLM):
    def generate(self, conversations, *, max_new_tokens=64, temperature=1.0, top_p=1.0, seed=None):
        return [m[-1]["content"] for m in self.prepare(conversations, max_new_tokens, temperature, top_p)]


class _TextEmbedder(TextEmbedder):
    dim = 2

    def embed(self, texts):
        return np.zeros((len(texts), 2), dtype=np.float32)


class _ImageEmbedder(ImageEmbedder):
    dim = 2

    def embed(self, images):
        return np.zeros((len(images), 2), dtype=np.float32)


class _Renderer(Renderer):
    def render(self, prompts, seeds):
        return []


class _TextEmbedderWithoutDim(TextEmbedder):
    def embed(self, texts):
        return np.zeros((len(texts), 2), dtype=np.float32)


# role base, a complete backend, the role's abstract methods
ROLES = [
    (Captioner, _Captioner, {"caption"}),
    (LLM, _LLM, {"generate"}),
    (TextEmbedder, _TextEmbedder, {"embed", "dim"}),
    (ImageEmbedder, _ImageEmbedder, {"embed", "dim"}),
    (Renderer, _Renderer, {"render"}),
]


@pytest.mark.parametrize(("base", "complete", "methods"), ROLES, ids=lambda x: getattr(x, "__name__", ""))
def test_backend_missing_a_role_method_cannot_be_constructed(base, complete, methods):
    assert issubclass(base, Backend) and base.__abstractmethods__ == methods
    incomplete = type(f"Incomplete{base.__name__}", (base,), {})
    with pytest.raises(TypeError, match="abstract"):
        incomplete()
    backend = complete()
    assert isinstance(backend, base) and isinstance(backend.cache_key, str) and len(backend.cache_key) == 16


def test_a_property_is_part_of_the_contract_too():
    with pytest.raises(TypeError, match="dim"):
        _TextEmbedderWithoutDim()


def test_registry_names_the_missing_method_instead_of_bad_options():
    reg = Registry("renderer", "spti.models.renderer", Renderer)
    reg.register("incomplete")(type("IncompleteRenderer", (Renderer,), {}))
    with pytest.raises(ConfigError, match="does not implement render"):
        reg.build({"backend": "incomplete"})
    with pytest.raises(ConfigError, match="does not implement generate"):
        LLM_REGISTRY.build({"backend": f"{__name__}:IncompleteLLM"})


class IncompleteLLM(LLM):  # a plug-in that forgot generate()
    pass


@pytest.mark.parametrize(
    ("base", "size"), [(Captioner, 16), (Renderer, 8), (ImageEmbedder, 32), (TextEmbedder, 512), (LLM, 8)]
)
def test_every_role_has_a_batch_size_default(base, size):
    # the batch sizes the pipeline used before the backend owned them: a backend without its own option
    # (a plug-in, a remote API) gets these
    assert base.batch_size == size


def test_llm_prologue_checks_sampling_and_messages_once_for_every_backend():
    llm = _LLM()
    conv = [{"role": "user", "content": "hi"}]
    assert llm.generate([conv]) == ["hi"]
    assert llm.generate([]) == []
    with pytest.raises(ConfigError, match="top_p"):
        llm.generate([conv], top_p=0)
    with pytest.raises(ConfigError, match="max_new_tokens"):
        llm.generate([conv], max_new_tokens=0)
    with pytest.raises(InputError, match="role"):
        llm.generate([[{"role": "robot", "content": "hi"}]])

    class Closed(_LLM):
        def _closed(self) -> bool:
            return True

    with pytest.raises(BackendError, match="closed"):
        Closed().generate([conv])
