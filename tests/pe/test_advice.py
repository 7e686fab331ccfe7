import logging

from spti.config import Config
from spti.pe import advice


def test_text_voting_with_the_tag_captioner_warns_in_every_run(caplog):
    """Every run's log gets the advice: a second run in the same process must not lose it (a process-wide
    "once" made golden run logs depend on test order)."""
    cfg = Config.from_dict({"pe": {"voting": "text"}, "captioner": {"backend": "efficientnet-lite0"}})
    with caplog.at_level(logging.WARNING, logger="spti"):
        assert advice.warn_if_weak_voting(cfg) is True
        assert advice.warn_if_weak_voting(cfg) is True  # the next run's log gets it too
    assert sum("voting image" in r.getMessage() for r in caplog.records) == 2


def test_image_voting_or_another_captioner_is_quiet():
    assert not advice.warn_if_weak_voting(Config.from_dict({"pe": {"voting": "image"}}))
    assert not advice.warn_if_weak_voting(Config.from_dict({"captioner": {"backend": "hf"}}))


def test_votes_per_candidate_and_the_signal_plan():
    cfg = Config.from_dict({"pe": {"population": 40, "variations": 2, "iterations": 3}})
    assert advice.candidates_per_iteration(cfg.pe) == 120
    assert advice.votes_per_candidate(600, cfg.pe) == 5.0
    quiet = advice.signal_plan(cfg, 600, sigma=4.0)
    assert quiet["votes_per_candidate"] == 5.0 and quiet["votes_per_sigma"] == 1.25 and "warning" not in quiet
    loud = advice.signal_plan(cfg, 600, sigma=6.0, sigma_of=lambda t: {1: 3.5, 2: 4.9}[t])
    assert "signal drowns" in loud["warning"]
    # 600 / (6 * 3) -> population <= 33 at T = 3; T = 2 gives sigma 4.9 <= 5 votes per candidate
    assert loud["fixes"] == ["population <= 33 at 3 iterations", "2 iterations (sigma 4.9) at this population"]
    assert "warning" not in advice.signal_plan(cfg, 600, sigma=0.0)  # not private: no noise, nothing drowns


def test_signal_warning_is_logged_without_exact_counts(caplog):
    cfg = Config.from_dict({"pe": {"population": 40, "variations": 2, "iterations": 3}})
    with caplog.at_level(logging.WARNING, logger="spti"):
        assert advice.warn_if_signal_drowns(cfg, 501, sigma=5.0) is True
        assert advice.warn_if_signal_drowns(cfg, 5000, sigma=5.0) is False  # 42 votes per candidate: fine
    msgs = [r.getMessage() for r in caplog.records]
    assert len(msgs) == 1 and "signal drowns" in msgs[0] and "501" not in msgs[0]


def test_signal_warning_computes_sigma_from_the_budget():
    cfg = Config.from_dict({"privacy": {"epsilon": 1.0}, "pe": {"population": 40, "variations": 2, "iterations": 3}})
    assert advice.sigma_for(cfg, 500) > advice.sigma_for(cfg, 500, iterations=1) > 0
    assert advice.warn_if_signal_drowns(cfg, 500) is True  # sigma 5.0 > 500 / 120
    assert advice.warn_if_signal_drowns(Config.from_dict({"privacy": {"not_private": True, "epsilon": None}}), 500) is False


def test_weak_voting_call_with_n_gives_both_warnings(caplog):
    cfg = Config.from_dict({"pe": {"voting": "text", "population": 40, "variations": 2, "iterations": 3},
                            "captioner": {"backend": "efficientnet-lite0"}})
    with caplog.at_level(logging.WARNING, logger="spti"):
        advice.warn_if_weak_voting(cfg, num_units=500)
    text = " ".join(r.getMessage() for r in caplog.records)
    assert "signal drowns" in text and "voting image" in text


def test_advice_uses_the_public_bound_instead_of_n():
    cfg = Config.from_dict({"privacy": {"num_private_bound": 1200},
                            "pe": {"population": 40, "variations": 2, "iterations": 3}})
    assert advice.public_units(cfg, 500) == 1200
    assert advice.signal_plan(cfg, 500, sigma=5.0)["votes_per_candidate"] == 10.0  # 1200 / 120, not 500 / 120
    assert advice.warn_if_signal_drowns(cfg, 500, sigma=5.0) is False
