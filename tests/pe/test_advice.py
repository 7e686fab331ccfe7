import logging

from spti.config import Config
from spti.pe import advice


def test_text_voting_with_the_tag_captioner_warns_once(caplog, monkeypatch):
    monkeypatch.setattr(advice, "_warned", set())
    cfg = Config.from_dict({"pe": {"voting": "text"}, "captioner": {"backend": "efficientnet-lite0"}})
    with caplog.at_level(logging.WARNING, logger="spti"):
        assert advice.warn_if_weak_voting(cfg) is True
        assert advice.warn_if_weak_voting(cfg) is False  # once
    assert sum("voting image" in r.getMessage() for r in caplog.records) == 1


def test_image_voting_or_another_captioner_is_quiet(monkeypatch):
    monkeypatch.setattr(advice, "_warned", set())
    assert not advice.warn_if_weak_voting(Config.from_dict({"pe": {"voting": "image"}}))
    assert not advice.warn_if_weak_voting(Config.from_dict({"captioner": {"backend": "hf"}}))
