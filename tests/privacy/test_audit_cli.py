"""`spti audit RUN` end to end through the real CLI, on a small run made with the plug-in fakes: the
sentence it prints, private/audit.json, its exit status (0 consistent, 3 violation, 2 error), release/
untouched, and the report's audit section (shown only once the run was audited)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spti.cli import AUDIT_VIOLATION_EXIT, main


def _run(tmp_path: Path, **privacy) -> Path:
    from support.fakes import write_colour_squares

    from spti.pipeline import run

    write_colour_squares(tmp_path / "private")
    cfg = {
        "out": str(tmp_path / "run"), "seed": 3, "progress": False,
        "data": {"private": str(tmp_path / "private"), "users_from_subfolders": True},
        "privacy": {"epsilon": 2.0, "delta": 1e-3, "insecure_noise_seed": 7, **privacy},
        "generation": {"domain": "a coloured object", "min_length": 3, "max_length": 20},
        "pe": {"iterations": 2, "population": 6, "variations": 2, "voting": "image"},
        "captioner": {"backend": "support.fakes:ColourCaptioner"},
        "llm": {"backend": "support.fakes:ScriptedLLM"},
        "text_embedder": {"backend": "support.fakes:BowEmbedder"},
        "renderer": {"backend": "support.fakes:SolidRenderer"},
        "image_embedder": {"backend": "support.fakes:MeanColourEmbedder"},
    }
    return run(cfg).path


def _tree(p: Path) -> dict[str, bytes]:
    return {str(f.relative_to(p)): f.read_bytes() for f in sorted(p.rglob("*")) if f.is_file()}


@pytest.fixture(scope="module")
def audited_run(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("audit-cli"))


def test_audit_command_prints_the_bound_and_exits_0(audited_run, capsys):
    run = audited_run
    release = _tree(run / "release")
    assert main(["report", str(run)]) == 0
    assert "Empirical privacy audit" not in (run / "report.html").read_text()  # not audited yet
    capsys.readouterr()

    rc = main(["audit", str(run), "--trials", "20000"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "empirical epsilon lower bound = " in out and "consistent with the claim" in out
    assert "claimed epsilon per histogram" in out and "audit.json" in out
    rec = json.loads((run / "private" / "audit.json").read_text())
    s = rec["summary"]
    assert s["trials"] == 20000 and not s["violation"] and s["sensitivity"]["ok"]
    assert s["epsilon_lower_bound"] < s["claimed_epsilon"] < s["claimed_epsilon_run"] == pytest.approx(2.0)
    assert s["mechanism"]["full_histogram"] is True
    assert _tree(run / "release") == release  # nothing goes to release/

    # the report shows it when rebuilt (--report), next to the claims, with the caveats
    assert main(["audit", str(run), "--trials", "20000", "--bin-only", "--report"]) == 0
    html = (run / "report.html").read_text()
    sec = html[html.index('<section id="audit">'):]
    sec = sec[: sec.index("</section>")]
    assert "Not a proof, a lower bound" in sec
    assert "claimed ε of one histogram" in sec and "claimed ε of the whole run (2 histograms composed)" in sec
    assert "Sensitivity check" in sec and "candidate source" in sec and "the run&#x27;s own candidates" in sec
    assert "not differentially private" in sec  # the measured numbers carry the label
    assert "the changed bins only" in sec  # --bin-only was recorded
    assert "target_bin" not in html and str(rec["private"]["tau"]) not in sec
    assert _tree(run / "release") == release


def test_a_planted_bug_is_a_violation_with_exit_3(audited_run, capsys, monkeypatch):
    import spti.audit.mechanism
    from spti.pe.histogram import vote_histogram

    def double(*args, **kwargs):  # every vote counted twice: sensitivity 2
        return 2 * vote_histogram(*args, **kwargs)

    monkeypatch.setattr(spti.audit.mechanism, "vote_histogram", double)
    rc = main(["audit", str(audited_run), "--trials", "20000", "--report"])
    out = capsys.readouterr().out
    assert rc == AUDIT_VIOLATION_EXIT == 3
    assert "VIOLATION" in out and "SENSITIVITY CHECK FAILED" in out
    html = (audited_run / "report.html").read_text()
    assert "VIOLATION: the measured lower bound" in html and "SENSITIVITY CHECK FAILED" in html


def test_audit_errors_exit_2(tmp_path, capsys):
    assert main(["audit", str(tmp_path)]) == 2
    assert "not an spti run folder" in capsys.readouterr().err


def test_help_documents_the_exit_status(capsys):
    with pytest.raises(SystemExit):
        main(["audit", "--help"])
    assert "3 when it exceeds it" in capsys.readouterr().out


def test_a_damaged_audit_file_is_a_note_not_a_failed_report(audited_run):
    from spti.report import build_report

    p = audited_run / "private" / "audit.json"
    saved = p.read_bytes()
    try:
        p.write_text("{not json")
        html = build_report(audited_run).read_text()
        assert '<section id="audit">' not in html and "audit.json could not be read" in html
    finally:
        p.write_bytes(saved)


@pytest.mark.parametrize("unit", ["record", "user"])
def test_a_discrete_noise_run_is_audited_with_its_own_sampler_and_claim(tmp_path, capsys, unit):
    """privacy.noise: discrete — the audit uses the engine's discrete release on the integer vote grid,
    checks the sensitivity in grid units and compares with the discrete sampler's own (zCDP) claim."""
    from spti.audit import per_release_epsilon

    run = _run(tmp_path, noise="discrete", unit=unit)
    assert main(["audit", str(run), "--trials", "20000", "--bin-only"]) == 0
    capsys.readouterr()
    s = json.loads((run / "private" / "audit.json").read_text())["summary"]
    budget = json.loads((run / "privacy.json").read_text())["budget"]
    grid = budget["grid"]
    assert s["mechanism"]["noise"].startswith("discrete gaussian") and s["mechanism"]["sensitivity"] == grid
    assert s["sensitivity"]["ok"] and s["sensitivity"]["l2"] == pytest.approx(grid)
    assert s["claimed_epsilon"] == pytest.approx(per_release_epsilon(budget["sigma"], budget["delta"],
                                                                     noise="discrete", unit=unit, grid=grid))
    assert s["epsilon_lower_bound"] < s["claimed_epsilon"] and not s["violation"]
