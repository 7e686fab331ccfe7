"""Candidate dedup before voting (spti.pe.dedup): exact (label, text) copies only get noise, never a vote."""

from spti.config import Config, PEConfig
from spti.pe.dedup import dedup_candidate_rows, dedup_enabled


def _rows():
    return [
        {"text": "a red shoe", "parent": 0, "kind": "parent"},
        {"text": "a blue shoe", "parent": 0, "kind": "variation"},
        {"text": "a red shoe", "parent": 1, "kind": "parent"},  # the same parent selected twice
        {"text": "a red shoe", "parent": 1, "kind": "variation"},  # a variation that changed nothing
        {"text": "a green bag", "parent": 1, "kind": "variation"},
    ]


def test_first_copy_kept_in_order():
    out = dedup_candidate_rows(_rows(), PEConfig(dedup=True))
    assert [r["text"] for r in out] == ["a red shoe", "a blue shoe", "a green bag"]
    assert out[0] == _rows()[0] and out[2] == _rows()[4]  # rows are kept whole (parent, kind)


def test_labels_separate_duplicates():
    rows = [{"text": "a shoe", "parent": 0, "kind": "parent", "label": 0},
            {"text": "a shoe", "parent": 1, "kind": "parent", "label": 1},
            {"text": "a shoe", "parent": 1, "kind": "variation", "label": 1}]
    out = dedup_candidate_rows(rows, PEConfig())
    assert [(r["label"], r["parent"]) for r in out] == [(0, 0), (1, 1)]


def test_switch_off_and_config_forms():
    rows = _rows()
    assert dedup_candidate_rows(rows, PEConfig(dedup=False)) is rows
    assert dedup_candidate_rows(rows, Config.from_dict({"pe": {"dedup": False}})) is rows
    assert len(dedup_candidate_rows(rows, Config.from_dict({}))) == 3  # a whole Config works too
    assert dedup_enabled(object())  # an object without the field: on (the default)
    no_copies = rows[:2]
    assert dedup_candidate_rows(no_copies, PEConfig()) is no_copies


def test_log_says_counts_only(caplog):
    import logging

    with caplog.at_level(logging.INFO, logger="spti"):
        dedup_candidate_rows(_rows(), PEConfig())
    msg = " ".join(r.getMessage() for r in caplog.records)
    assert "2 of 5" in msg and "red shoe" not in msg


def test_feature_copies_and_their_counts():
    import numpy as np

    from spti.pe.dedup import drop_copy_counts, feature_copies

    f = np.array([[1, 0], [0, 1], [1, 0], [1, 0], [0.5, 0.5]], dtype=np.float32)
    assert feature_copies(f).tolist() == [False, False, True, True, False]
    assert feature_copies(f, labels=np.array([0, 0, 1, 0, 0])).tolist() == [False, False, False, True, False]
    noisy = np.array([9.0, 2.0, 4.0, -1.0, 3.0])
    assert drop_copy_counts(noisy, f).tolist() == [9.0, 2.0, 0.0, 0.0, 3.0]
    assert drop_copy_counts(noisy, f, PEConfig(dedup=False)).tolist() == noisy.tolist()
    assert feature_copies(np.zeros((0, 3))).tolist() == []


def test_nearest_neighbour_ties_go_to_the_first_copy():
    """Why a copy's count is pure noise: the vote of a tie lands on the lowest index."""
    import numpy as np

    from spti.pe.histogram import vote_histogram

    cands = np.array([[1, 0], [0, 1], [1, 0]], dtype=np.float32)
    priv = np.array([[1, 0.1], [0.9, 0], [0, 1]], dtype=np.float32)
    assert vote_histogram(priv, cands, show_progress=False).tolist() == [2.0, 1.0, 0.0]
