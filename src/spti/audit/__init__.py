"""An empirical lower bound on ε: a black-box audit of the noisy vote histogram a run releases.

The accountant (:mod:`spti.privacy`) *proves* an upper bound on ε, but only for the mechanism it assumes:
every private record (or user) moves the vote vector by at most 1 in L2, and every bin gets N(0, σ²) noise
that nobody can predict. A bug in the weights, the nearest-neighbour vote, the thresholding or the noise
sampler breaks that assumption silently. This module measures instead of proving, on the code a run
actually uses (the standard black-box audit of a DP implementation: Jagielski, Ullman & Oprea, "Auditing
Differentially Private Machine Learning: How Private is Private SGD?", NeurIPS 2020; Nasr, Song,
Thakurta, Papernot & Carlini, "Adversary Instantiation: Lower Bounds for Differentially Private Machine
Learning", IEEE S&P 2021):

1. Neighbouring datasets: D = the private features, D' = D ∪ {canary} (add/remove-one adjacency; at user
   level the canary is one new user with several rows, whose weights the real ``contribution_weights``
   must make sum to 1). The default canary ("auto") is a copy of the candidate that D votes for least,
   so its whole weight lands on one bin that holds (almost) no other votes.
2. The clean histograms of D and D' are computed ONCE with the real ``vote_histogram`` (same embedder
   space, weights, nn backend, chunking, normalisation). Their difference is reported (L1, L2, bins that
   changed): a sensitivity bug already shows here, before any noise is drawn.
3. The release (clean counts + the real noise sampler, then the configured thresholding) is drawn
   ``trials`` times for D and for D'. The statistic is the released value of the bin(s) that changed,
   projected on the clean difference (for one bin: its noisy count) — the most powerful one-dimensional
   test against the Gaussian mechanism. Because only the canary's bin(s) differ, re-running the vote per
   trial is unnecessary: the noise is the only randomness.
4. For a threshold test "say D' when statistic ≥ τ", FPR = P[stat ≥ τ | D] and FNR = P[stat < τ | D'].
   (ε, δ)-DP forces, for the event S = {stat ≥ τ} and its complement,

       1 − FNR ≤ e^ε FPR + δ     and     1 − FPR ≤ e^ε FNR + δ,

   so ε ≥ max( ln((1 − δ − FNR)/FPR), ln((1 − δ − FPR)/FNR) ). With Clopper–Pearson upper confidence
   bounds on FPR and FNR (each at level α/2; a union bound makes the pair hold with probability ≥ 1 − α),
   the right-hand side is an ε lower bound that holds with confidence 1 − α.
5. Choosing τ honestly: the first quarter of each set of trials (``selection_fraction``) is used only
   to choose τ (the one with the best, conservatively computed, bound on that part); the bound is
   evaluated once, at that τ, on the other trials. They are independent of the choice, so no correction
   for the selection is needed.

What the bound means. A correct Gaussian mechanism with σ calibrated to ε gives a bound well below ε (an
ideal test needs ~1/FPR trials to see the tail where the privacy loss is ε; with 10⁵ trials and δ = 1e-5
the bound reaches about half of ε). The audit cannot prove privacy; it can prove a *violation*: a bound
above the claim means that, with confidence 1 − α, the implementation is less private than it says. The
claim compared is the ε of ONE histogram, ε(σ, T = 1, δ) from the accountant, because one release is what
is audited; the run's T-fold ε is reported beside it for context.

Scope, stated honestly: the audit covers the histogram mechanism given the candidates (vote → noise →
threshold), not the rest of the pipeline; with secure noise it treats the sampler as a black box
(floating-point attacks on the sampler, see :mod:`spti.privacy.noise`, are out of reach of a test of this
size); and the canary is worst case for the vote (all its weight on one bin) but its bin is chosen by a
heuristic (fewest votes), which is optimal only up to the thresholding (for τ above the threshold H the
base count does not matter for Gaussian noise).

Privacy of the audit's own output: the audit's numbers describe the mechanism, but the canary's bin and
the clean count there are functions of the private data. :meth:`AuditResult.summary` holds only what is
safe to publish (bounds, rates, trials, the sensitivity check); the full record, with the bin, goes to
``private/audit.json`` in the run folder (:func:`audit_run`), never to release/.

Where the parts live: :mod:`~spti.audit.mechanism` (the release under test, built from spti's own
functions), :mod:`~spti.audit.stats` (Clopper–Pearson and the ε lower bound, steps 4–5),
:mod:`~spti.audit.core` (the canary, the clean histograms and the draws, steps 1–3),
:mod:`~spti.audit.result` (:class:`AuditResult`, what may be published) and :mod:`~spti.audit.run` (the
audit of a run folder, ``private/audit.json``).
"""

from __future__ import annotations

from spti.audit.core import audit_histogram_mechanism
from spti.audit.mechanism import HistogramMechanism, NoiseFn, VoteFn, WeightsFn, gaussian_noise_fn
from spti.audit.result import AUDIT_SCHEMA, AUDIT_SCHEMA_VERSION, AuditResult
from spti.audit.run import AUDIT_FILE, SYNTHETIC_CANDIDATES_SEED, audit_run, read_audit
from spti.audit.stats import (
    SELECTION_ALPHA,
    SELECTION_FRACTION,
    clopper_pearson,
    epsilon_lower_bound,
    per_release_epsilon,
)

__all__ = [
    "AUDIT_FILE",
    "AUDIT_SCHEMA",
    "AUDIT_SCHEMA_VERSION",
    "SELECTION_ALPHA",
    "SELECTION_FRACTION",
    "SYNTHETIC_CANDIDATES_SEED",
    "AuditResult",
    "HistogramMechanism",
    "NoiseFn",
    "VoteFn",
    "WeightsFn",
    "audit_histogram_mechanism",
    "audit_run",
    "clopper_pearson",
    "epsilon_lower_bound",
    "gaussian_noise_fn",
    "per_release_epsilon",
    "read_audit",
]
