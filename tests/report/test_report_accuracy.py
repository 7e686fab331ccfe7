"""The report's downstream-accuracy section (issue 12): overall, ceiling, chance and per class, each labelled
not differentially private, a confusion-matrix picture, and the per-class curves over iterations."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from spti.report import build_report
from spti.report.markup import NOT_DP_LABEL
from spti.report.plots import confusion_svg


def _section(doc: str, sid: str) -> str:
    start = doc.index(f'<section id="{sid}">')
    return doc[start : doc.index("</section>", start)]


def _accuracy_entry(value: float, evil: str) -> dict:
    return {
        "value": value,
        "classifier": "linear probe: multinomial logistic regression",
        "n_synthetic": 30,
        "n_real_test": 12,
        "per_class": {"cat": 0.75, "dog": 0.5, evil: 0.0},
        "n_test_per_class": {"cat": 4, "dog": 4, evil: 4},
        "confusion": {"labels": ["cat", "dog", evil, "fox"], "matrix": [[3, 1, 0, 0], [1, 2, 0, 1], [2, 2, 0, 0],
                                                                         [0, 0, 0, 0]]},
        "chance": {"uniform": 1 / 3, "majority": 1 / 3, "majority_class": "cat"},
        "classes_only_synthetic": ["fox"],
        "classes_only_real": [evil],
        "accuracy_shared_classes": 0.625,
        "ceiling": {"value": 0.9167, "per_class": {"cat": 1.0, "dog": 0.75, evil: 1.0},
                    "confusion": {"labels": ["cat", "dog", evil], "matrix": [[4, 0, 0], [1, 3, 0], [0, 0, 4]]}},
        "differentially_private": False,
        "computed_against_private_data": False,
        "note": "tested on the real labelled set",
    }


@pytest.fixture()
def accuracy_run(run_folder: Path) -> Path:
    evil = "<b>x&y</b>"
    path = run_folder / "metrics.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    data["metrics"]["accuracy-linear"] = _accuracy_entry(0.4167, evil)
    data["real_labelled"] = {"source": "/data/test", "test": "the test half of /data/test", "n_test": 12,
                             "ceiling_train": "the train half of /data/test", "computed_on_private_data": False}
    data["per_iteration"] = [
        {"iteration": 1, "fid": 40.0, "accuracy-linear": 0.3, "accuracy-linear.per_class.cat": 0.5,
         "accuracy-linear.per_class.dog": 0.25},
        {"iteration": 2, "fid": 30.0, "accuracy-linear": 0.42, "accuracy-linear.per_class.cat": 0.75,
         "accuracy-linear.per_class.dog": 0.5},
    ]
    path.write_text(json.dumps(data), encoding="utf-8")
    return run_folder


def test_accuracy_section_with_ceiling_chance_per_class_confusion_and_labels(accuracy_run: Path):
    doc = build_report(accuracy_run).read_text(encoding="utf-8")
    acc = _section(doc, "accuracy")
    assert "41.7 %" in acc and "91.7 %" in acc and "33.3 %" in acc  # synthetic, ceiling, chance
    assert acc.count(f">{NOT_DP_LABEL}</span>") >= 8
    assert acc.count('<svg xmlns="http://www.w3.org/2000/svg" class="confusion"') == 2  # synthetic + ceiling
    assert "never predicted" in acc and "only in the synthetic set" in acc
    assert "<b>x&y</b>" not in doc and "&lt;b&gt;x&amp;y&lt;/b&gt;" in acc  # class names are escaped
    assert "62.5 %" in acc  # on the shared classes
    assert "/data/test" not in doc and "the test half of test" in acc  # the folder by name only
    # the metrics table shows the ceiling and chance next to the value
    metrics = _section(doc, "metrics")
    assert re.search(r"<strong>0\.4167</strong> \(ceiling 0\.9167, chance 0\.3333\)", metrics)


def test_per_class_curves_are_drawn_with_the_overall_one(accuracy_run: Path):
    pytest.importorskip("matplotlib")
    doc = build_report(accuracy_run).read_text(encoding="utf-8")
    curves = _section(doc, "curves")
    assert 'alt="accuracy-linear over iterations, overall and per class"' in curves
    assert 'alt="accuracy-linear.per_class.cat over iterations"' not in curves  # not a plot of its own
    assert 'alt="fid over iterations"' in curves
    assert f"accuracy-linear.per_class.cat ({NOT_DP_LABEL})" in curves  # still in the values table


def test_no_accuracy_section_without_accuracy(run_folder: Path):
    doc = build_report(run_folder).read_text(encoding="utf-8")
    assert '<section id="accuracy">' not in doc


def test_confusion_svg_is_self_contained_and_scales_to_many_classes():
    small = confusion_svg(["a", "b"], [[2, 0], [1, 1]], "t <x>")
    assert small.startswith("<svg") and small.endswith("</svg>") and "t &lt;x&gt;" in small
    assert ">2</text>" in small and "href" not in small
    big = confusion_svg([str(i) for i in range(40)], [[1] * 40 for _ in range(40)], "big")
    assert big.count("<rect") == 1600 and "<text" in big  # no per-cell counts, still the title
