from pathlib import Path

import pytest

from spti.config import Config

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_configs_are_valid_and_name_real_backends(path):
    from spti.models.captioner import REGISTRY as C
    from spti.models.image_embedder import REGISTRY as I
    from spti.models.llm import REGISTRY as L
    from spti.models.renderer import REGISTRY as R
    from spti.models.text_embedder import REGISTRY as T

    cfg = Config.from_yaml(path).validate()
    for reg, c in ((C, cfg.captioner), (L, cfg.llm), (T, cfg.text_embedder), (R, cfg.renderer), (I, cfg.image_embedder)):
        assert c["backend"] in reg.names()
    assert len(EXAMPLES) >= 2
