"""The report's section for ``spti audit``: the empirical lower bound on ε next to the claim.

Shown only when the run was audited (``private/audit.json`` exists; :func:`spti.audit.audit_run` writes
it). Only the audit's publishable ``summary`` is read (:func:`spti.audit.read_audit`): the canary's bin and
the clean count there, which locate something in the private votes, stay in ``private/``.

What the section must make plain, because a number next to "ε" invites misreading: the bound is a *lower*
bound measured on one histogram release, not a proof of privacy; it is compared with the ε of ONE
histogram (the whole run's ε, T histograms composed, is shown beside it for context); and the audit's
numbers come from running the mechanism on the private votes, so they carry the "not differentially
private" label like every other number computed from private data.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from spti.report.markup import esc, fmt, kv_table, notdp, note, section
from spti.report.reader import RunReader

__all__ = ["audit_section"]

TITLE = "Empirical privacy audit (spti audit)"


def audit_section(run: RunReader) -> str:
    """The audit section's HTML, or "" when the run has no audit (so the report's list of sections can
    hold the call unconditionally)."""
    from spti.audit import AUDIT_FILE, read_audit

    if not (run.root / AUDIT_FILE).is_file():
        return ""
    try:
        summary = read_audit(run.root)
    except Exception as e:  # noqa: BLE001 - a damaged file becomes a note, never a failed report
        run.notes.append(f"{AUDIT_FILE} could not be read ({type(e).__name__}); the audit section is omitted")
        return ""
    if not isinstance(summary, Mapping):
        run.notes.append(f"{AUDIT_FILE} is not an spti audit record; the audit section is omitted")
        return ""
    return section("audit", TITLE, _body(summary))


def _measured(v: Any) -> str:
    """A number the audit measured on the private votes, with the not-DP label next to it."""
    return f"{esc(fmt(v))} {notdp()}"


def _plain(v: Any) -> str | None:
    return None if v is None else esc(fmt(v))


def _body(s: Mapping[str, Any]) -> str:
    g = lambda d, k: d.get(k) if isinstance(d, Mapping) else None  # noqa: E731
    sens, canary, cands, mech = (s.get(k) if isinstance(s.get(k), Mapping) else {}
                                 for k in ("sensitivity", "canary", "candidates", "mechanism"))
    confidence = s.get("confidence")
    conf_txt = f"{100 * confidence:.0f}%" if isinstance(confidence, (int, float)) else "?"
    parts = [
        "<p><strong>Not a proof, a lower bound.</strong> The audit runs this run's histogram mechanism (vote, "
        "weights, threshold, noise sampler) many times on the private set with and without one worst-case "
        "canary record, and turns how well a threshold test tells the two apart into a lower bound on ε that "
        f"holds with {esc(conf_txt)} confidence. A bound above the claim proves the implementation is less "
        "private than it says; a bound below it is consistent with the claim but proves nothing more.</p>"
    ]
    if s.get("violation"):
        parts.append('<div class="banner warn">VIOLATION: the measured lower bound on ε exceeds the claimed ε of '
                     "one histogram.</div>")
    if sens and sens.get("ok") is False:
        parts.append('<div class="banner warn">SENSITIVITY CHECK FAILED: one canary changed the clean histogram '
                     "by more than the sensitivity the accountant assumes.</div>")
    iters = s.get("iterations")
    parts.append(kv_table([
        (f"ε lower bound ({conf_txt} confidence)", _measured(s.get("epsilon_lower_bound"))),
        ("claimed ε of one histogram (what is audited)", _plain(s.get("claimed_epsilon"))),
        (f"claimed ε of the whole run ({fmt(iters)} histogram{'' if iters == 1 else 's'} composed)"
         if iters is not None else "claimed ε of the whole run", _plain(s.get("claimed_epsilon_run"))),
        ("δ", _plain(s.get("delta"))),
        ("verdict", esc("VIOLATION" if s.get("violation") else
                        "consistent with the claim (an audit can find violations, not prove privacy)")),
        ("point estimate of ε (no confidence correction)", _measured(s.get("epsilon_estimate"))),
        ("trials per dataset (of which evaluate the test)",
         esc(f"{fmt(s.get('trials'))} ({fmt(s.get('evaluation_trials'))})")),
        ("false-positive rate (upper bound)", f"{_measured(s.get('fpr'))} ({esc(fmt(s.get('fpr_upper')))})"),
        ("false-negative rate (upper bound)", f"{_measured(s.get('fnr'))} ({esc(fmt(s.get('fnr_upper')))})"),
    ], raw_html=True))

    parts.append("<h3>Sensitivity check (before any noise)</h3>")
    parts.append(kv_table([
        ("L2 change of the clean histogram by one canary", _measured(g(sens, "l2")) if sens else None),
        ("L2 sensitivity the accountant assumes", _plain(g(sens, "bound"))),
        ("within the assumed sensitivity", _plain(g(sens, "ok"))),
        ("bins changed by the canary", _measured(g(sens, "changed_bins")) if sens else None),
        ("canary", esc(f"{fmt(g(canary, 'rows'))} row(s), one {g(canary, 'unit') or 'record'}, total vote weight "
                       f"{fmt(g(canary, 'weight'))}") if canary else None),
        ("how the canary was placed", _plain(g(canary, "how"))),
    ], raw_html=True) or note("no sensitivity check recorded"))

    parts.append("<h3>What was audited</h3>")
    src = g(cands, "source")
    src_txt = {"cache": "the run's own candidates (features from its cache)",
               "synthetic": "synthetic candidates (random unit vectors from a public seed)"}.get(src, src)
    parts.append(kv_table([
        ("candidate source", _plain(src_txt)),
        ("PE iteration of the candidates", _plain(g(cands, "iteration"))),
        ("candidates (bins)", _plain(g(cands, "count"))),
        ("about the candidates", _plain(g(cands, "note"))),
        ("noise", _plain(g(mech, "noise"))),
        ("σ", _plain(g(mech, "sigma"))),
        ("threshold H", _plain(g(mech, "threshold")) if mech.get("threshold") is not None else esc("none (the noisy histogram itself)")),
        ("nearest-neighbour backend", _plain(g(mech, "nn_backend"))),
        ("noise drawn for", esc("every bin, as the engine does" if g(mech, "full_histogram")
                                else "the changed bins only (same statistic)") if mech else None),
        ("method", _plain(s.get("method"))),
        ("audit time (s)", _plain(s.get("seconds"))),
    ], raw_html=True))
    parts.append(note("Scope: the audit covers one histogram release given the candidates (vote, noise, threshold), "
                      "not the rest of the pipeline; the full record, which locates the canary in the private votes, "
                      "stays in private/audit.json."))
    return "".join(parts)
