"""The engine applies the threshold in units of σ (``pe.threshold_sigmas``, :func:`effective_threshold`)."""

from __future__ import annotations

import numpy as np
from support.fakes import BowEmbedder, ScriptedLLM

from spti.config import GenerationConfig, PEConfig
from spti.data.io import read_jsonl
from spti.pe.candidates import TextCandidateEmbedder
from spti.pe.engine import PrivateEvolution
from spti.pe.generation import TextGenerator
from spti.privacy import NoiseSource

from .test_engine import private_texts


def _run(tmp_path, threshold_sigmas: float) -> list[dict]:
    emb = BowEmbedder()
    cfg = PEConfig(iterations=1, population=20, variations=2, selection="sample", threshold_sigmas=threshold_sigmas,
                   chunk_size=128)
    PrivateEvolution(
        cfg=cfg, generator=TextGenerator(ScriptedLLM(), GenerationConfig(variation_mode="rephrase"), seed=0),
        embed_candidates=TextCandidateEmbedder(emb), private_features=emb.embed(private_texts(200)), weights=None,
        sigma=1.0, noise=NoiseSource(insecure_seed=3), checkpoint_dir=tmp_path, seed=0,
    ).run()
    return read_jsonl(tmp_path / "iter_001" / "population.jsonl")





def test_threshold_in_sigmas_only_keeps_candidates_above_k_sigma(tmp_path):
    kept = _run(tmp_path / "k3", 3.0)
    # with H = 3σ every selected candidate's noisy count is at least 3 (σ = 1): pure-noise bins are gone
    assert min(r["noisy_count"] for r in kept) >= 3.0
    plain = _run(tmp_path / "k0", 0.0)
    # the same noise (insecure seed) without a threshold: some selected candidates lie below 3σ
    assert min(r["noisy_count"] for r in plain) < 3.0
    assert np.isclose(len(kept), len(plain))
