"""A/B comparison design: trials saved by the anytime-valid sequential test against the exact fixed-sample design.

    h1-training bench ab --json
    h1-training bench ab --reps 20000 --seed 1 --no-fail

Seeded simulation of the sequential test exactly as the ``model_comparison`` node runs it
(:func:`~h1_training.evaluation.stats.sequential_test`'s rule, vectorised with numpy over ``--reps`` comparisons:
e-process on discordant pairs, futility bound, trial cap, all from :class:`SequentialPlan` with its default
settings; only the planned effect differs between scenarios).

* H1 scenarios, planned = true effect: 50 % vs 80 % and 30 % vs 50 %. The reference is the exact fixed design:
  the smallest n per arm at which the two-sided Boschloo test (scipy) at alpha 0.05 has power 0.8 - computed
  exactly from Boschloo's rejection region (``stats.boschloo_boundary``: a staircase walk over scipy's
  ``boschloo_exact`` with ~2n calls, cached on disk; the binomial probability of the region is the power a
  simulation would converge to, and the bench also simulates it as a check). Reported per scenario: ``fixed_n``,
  the sequential test's average trials (``asn_per_arm``), ``asn_reduction_pct`` (= 100 (1 - ASN / fixed_n)),
  ``power`` (B declared better within the cap) with its Monte Carlo standard error, and the same at half the
  planned effect (no target there). Also ``fixed_n_same_alpha_split``: a one-sided Boschloo test at
  ``planned_share * alpha`` (the alpha the sequential test spends on "B better"), and the saving against it.
* H0 scenarios (50 % vs 50 %, 80 % vs 80%) under both plans: ``false_positive_rate`` (any winner; the largest
  of the four, with its standard error and Clopper-Pearson 95 % upper bound) and ``h0_asn_fraction_of_cap``.
* Partial credit (``partial_credit``): the same test on task-stage scores (a pair is discordant when the scores
  differ) against success only, on a synthetic stage model (see ``STAGE_PROBS``); and
  (``partial_credit_checkpoints``) on the scores the simulated reach task produced for the first and the last
  model of a real learning-demo run (``--demo-run RUN_DIR`` evaluates them now; otherwise the outcomes saved in
  ``bench/data/ab_checkpoint_outcomes.json`` by such a run are replayed).

Targets (booleans in ``targets``; exit status 1 when one is missed unless ``--no-fail``): >= 25 % fewer trials
than the fixed design in both H1 scenarios, power >= 0.8, false-positive rate <= alpha, and under H0 a stop on
average before 70 % of the cap. ~10-40 s on this 2-core machine (the first run also computes the Boschloo
regions, ~1 min, then cached).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import numpy as np

HELP = "sequential A/B test vs exact fixed design: trials saved, power, false positives (seeded simulation)"

H1_SCENARIOS = {"p50_vs_p80": (0.5, 0.8), "p30_vs_p50": (0.3, 0.5)}
H0_RATES = (0.5, 0.8)
TARGET_REDUCTION_PCT = 25.0
TARGET_POWER = 0.8
TARGET_H0_CAP_FRACTION = 0.7
# Synthetic task-stage model for the partial-credit part (score = stage / 4, success = stage 4): the worse
# checkpoint more often stalls at an early stage. Success rates 0.5 and 0.8 as in the first H1 scenario.
STAGE_PROBS = {"A": (0.15, 0.15, 0.10, 0.10, 0.50), "B": (0.04, 0.05, 0.06, 0.05, 0.80)}
# Per-trial outcomes of two real checkpoints of the learning demo (written by `bench ab --demo-run RUN_DIR`).
CHECKPOINT_OUTCOMES = Path(__file__).resolve().parent / "data" / "ab_checkpoint_outcomes.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--reps", type=int, default=20000, help="simulated comparisons per scenario (>= 4000)")
    parser.add_argument("--seed", type=int, default=20261205)
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--no-fail", action="store_true", help="exit 0 even when a target is missed")
    parser.add_argument("--demo-run", default="", metavar="RUN_DIR",
                        help="a finished `h1-training demo` run: evaluate its first and last model on fresh seeded "
                             "episodes and compare score vs success-only testing on those real scores")
    parser.add_argument("--checkpoint-episodes", type=int, default=100, help="episodes per model for --demo-run")
    parser.add_argument("--checkpoint-outcomes", default=str(CHECKPOINT_OUTCOMES),
                        help="per-trial outcomes saved by an earlier --demo-run (default: the measured file in the "
                             "repository)")


def simulate(plan, score_a: np.ndarray, score_b: np.ndarray) -> dict:
    """Run the sequential rule of ``plan`` over rows of paired outcomes (success flags or scores), ``(reps,
    cap)`` each. Returns per-rep pairs used, stop reason code (1 efficacy, 2 futility, 3 cap) and direction."""
    cap = score_a.shape[1]
    disc = score_a != score_b
    m = np.cumsum(disc, axis=1)
    k = np.cumsum(disc & (score_b > score_a), axis=1)
    log_e = plan.log_e(k, m)
    up = log_e >= math.log(plan.threshold)
    down = log_e <= (math.log(plan.futility) if plan.futility > 0 else -np.inf)
    stop = up | down
    rows = np.arange(score_a.shape[0])
    idx = np.where(stop.any(axis=1), stop.argmax(axis=1), cap - 1)
    efficacy = up[rows, idx]
    futility = down[rows, idx] & ~efficacy
    b_better = efficacy & (2 * k[rows, idx] > m[rows, idx])
    return {"pairs": idx + 1, "efficacy": efficacy, "futility": futility, "b_better": b_better}


def _se(p: float, n: int) -> float:
    return math.sqrt(max(p * (1 - p), 1e-12) / n)


def _binary(rng: np.random.Generator, reps: int, cap: int, rate_a: float, rate_b: float):
    return rng.random((reps, cap)) < rate_a, rng.random((reps, cap)) < rate_b


def run(args: argparse.Namespace) -> dict:
    from scipy import stats as sps

    from h1_training.evaluation.stats import SequentialPlan, boschloo_boundary, boschloo_fixed_n, boschloo_power

    if args.reps < 4000:
        raise SystemExit(f"--reps must be >= 4000 (the false-positive rate needs it), got {args.reps}")
    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    out: dict = {"reps": args.reps, "seed": args.seed, "alpha": args.alpha, "scenarios": {}}
    defaults = SequentialPlan()
    out["design"] = {"planned_share": defaults.planned_share, "futility": defaults.futility,
                     "cap_factor": defaults.cap_factor, "threshold": 1 / args.alpha,
                     "fixed_reference": "two-sided Boschloo (scipy.stats.boschloo_exact), exact power from its "
                                        "rejection region, smallest n with power >= 0.8"}
    t_fixed = 0.0
    plans = {}
    for name, (pa, pb) in H1_SCENARIOS.items():
        plan = SequentialPlan(pa, pb, args.alpha)
        plans[name] = plan
        t = time.perf_counter()
        n_fixed = boschloo_fixed_n(pa, pb, args.alpha, TARGET_POWER)
        t_fixed += time.perf_counter() - t
        # check the exact power by simulating the fixed design on the same region
        hi = np.asarray(boschloo_boundary(n_fixed, args.alpha))
        sa = rng.binomial(n_fixed, pa, args.reps)
        sb = rng.binomial(n_fixed, pb, args.reps)
        fixed_sim_power = float(np.mean(sb >= hi[sa]))
        cap = plan.cap_pairs
        res = simulate(plan, *_binary(rng, args.reps, cap, pa, pb))
        half = simulate(plan, *_binary(rng, args.reps, cap, pa, pa + (pb - pa) / 2))
        asn = float(res["pairs"].mean())
        power = float(res["b_better"].mean())
        # The same alpha split as the sequential test (planned_share of alpha on "B better"): one-sided Boschloo
        n_split = boschloo_fixed_n(pa, pb, plan.planned_share * args.alpha, TARGET_POWER, "greater")
        out["scenarios"][name] = {
            "rate_a": pa, "rate_b": pb, "fixed_n": n_fixed,
            "fixed_n_same_alpha_split": n_split,
            "fixed_power_exact": round(boschloo_power(n_fixed, pa, pb, args.alpha), 4),
            "fixed_power_simulated": round(fixed_sim_power, 4),
            "cap_per_arm": cap, "asn_per_arm": round(asn, 2),
            "asn_se": round(float(res["pairs"].std(ddof=1)) / math.sqrt(args.reps), 2),
            "asn_reduction_pct": round(100.0 * (1.0 - asn / n_fixed), 1),
            "asn_reduction_pct_vs_same_alpha_split": round(100.0 * (1.0 - asn / n_split), 1),
            "power": round(power, 4), "power_se": round(_se(power, args.reps), 4),
            "futility_stop_rate": round(float(res["futility"].mean()), 4),
            "cap_reached_rate": round(float((~res["efficacy"] & ~res["futility"]).mean()), 4),
            "half_effect": {"rate_b": pa + (pb - pa) / 2, "power": round(float(half["b_better"].mean()), 4),
                            "asn_per_arm": round(float(half["pairs"].mean()), 2)},
        }
    h0 = {}
    worst_fpr, worst_frac = 0.0, 0.0
    for rate in H0_RATES:
        for name, plan in plans.items():
            res = simulate(plan, *_binary(rng, args.reps, plan.cap_pairs, rate, rate))
            fpr = float(res["efficacy"].mean())
            frac = float(res["pairs"].mean()) / plan.cap_pairs
            h0[f"p{round(rate * 100)}_both_plan_{name}"] = {
                "false_positive_rate": round(fpr, 4), "fpr_se": round(_se(fpr, args.reps), 4),
                "asn_per_arm": round(float(res["pairs"].mean()), 2), "asn_fraction_of_cap": round(frac, 3),
                "futility_stop_rate": round(float(res["futility"].mean()), 4)}
            worst_fpr, worst_frac = max(worst_fpr, fpr), max(worst_frac, frac)
    out["h0"] = h0
    out["false_positive_rate"] = round(worst_fpr, 4)
    out["false_positive_rate_se"] = round(_se(worst_fpr, args.reps), 4)
    out["false_positive_rate_upper95"] = round(
        float(sps.binomtest(round(worst_fpr * args.reps), args.reps).proportion_ci(0.95, "exact").high), 4)
    out["h0_asn_fraction_of_cap"] = round(worst_frac, 3)
    out["partial_credit"] = _partial_credit(rng, plans["p50_vs_p80"], args.reps)
    if args.demo_run:
        outcomes = checkpoint_outcomes(Path(args.demo_run), args.checkpoint_episodes)
        source = f"measured now: {args.demo_run}, {args.checkpoint_episodes} fresh seeded episodes per model"
    else:
        path = Path(args.checkpoint_outcomes)
        outcomes = json.loads(path.read_text()) if path.is_file() else None
        source = f"{path} ({outcomes.get('provenance', '')})" if outcomes else ""
    if outcomes:
        out["partial_credit_checkpoints"] = _checkpoint_part(rng, args.reps, args.alpha, outcomes, source)
    sc = out["scenarios"]
    targets = {
        "asn_reduction_ge_25pct": all(s["asn_reduction_pct"] >= TARGET_REDUCTION_PCT for s in sc.values()),
        "power_ge_0_8": all(s["power"] >= TARGET_POWER for s in sc.values()),
        "false_positive_rate_le_alpha": worst_fpr <= args.alpha,
        "h0_stop_before_70pct_of_cap": worst_frac < TARGET_H0_CAP_FRACTION,
    }
    out["targets"] = targets
    out["all_targets_met"] = all(targets.values())
    out["fixed_design_s"] = round(t_fixed, 1)
    out["elapsed_s"] = round(time.perf_counter() - t0, 1)
    out["loadavg_1m"] = round(os.getloadavg()[0], 2)
    return out


def _score_vs_binary(rng: np.random.Generator, reps: int, alpha: float, pool_a: np.ndarray, pool_b: np.ndarray,
                     binary_plan=None) -> dict:
    """The sequential test on scores against the same test on success only, over the same simulated pairs drawn
    from two pools of per-trial scores (1.0 = success). The binary test is planned for the pools' true success
    rates (its best case) unless ``binary_plan`` is given; the score test for the pools' own split of
    score-discordant pairs (what a plan from pilot scores would use). Both share the binary plan's cap."""
    from h1_training.evaluation.stats import SequentialPlan

    rate_a, rate_b = float(np.mean(pool_a == 1.0)), float(np.mean(pool_b == 1.0))
    plan = binary_plan or SequentialPlan(min(max(rate_a, 0.01), 0.98), min(max(rate_b, 0.02), 0.99), alpha)
    cap = plan.cap_pairs
    score_a = pool_a[rng.integers(0, len(pool_a), (reps, cap))]
    score_b = pool_b[rng.integers(0, len(pool_b), (reps, cap))]
    binary = simulate(plan, score_a == 1.0, score_b == 1.0)
    b_higher = float(np.mean(pool_b[None, :] > pool_a[:, None]))
    a_higher = float(np.mean(pool_a[:, None] > pool_b[None, :]))
    q_score = b_higher / (b_higher + a_higher)
    # a SequentialPlan whose discordant-pair probability is q_score: odds ratio q/(1-q) with rate_a 0.5
    odds = q_score / (1 - q_score)
    score_plan = SequentialPlan(0.5, odds / (1 + odds), alpha, max_pairs=cap)
    scored = simulate(score_plan, score_a, score_b)
    asn_bin, asn_score = float(binary["pairs"].mean()), float(scored["pairs"].mean())
    return {"rate_a": round(rate_a, 4), "rate_b": round(rate_b, 4), "cap_per_arm": cap,
            "binary_asn_per_arm": round(asn_bin, 2), "binary_power": round(float(binary["b_better"].mean()), 4),
            "score_planned_q1": round(q_score, 3), "score_asn_per_arm": round(asn_score, 2),
            "score_power": round(float(scored["b_better"].mean()), 4),
            "score_saving_pct": round(100.0 * (1.0 - asn_score / asn_bin), 1)}


def _partial_credit(rng: np.random.Generator, plan, reps: int) -> dict:
    """Scores vs success only on the synthetic stage model (pools large enough to be its distribution)."""
    stages = np.arange(5) / 4.0
    pool_a = rng.choice(stages, size=100_000, p=STAGE_PROBS["A"])
    pool_b = rng.choice(stages, size=100_000, p=STAGE_PROBS["B"])
    out = {"model": "synthetic task stages 0-4 (score = stage / 4), success = stage 4; stage probabilities "
                    f"A {STAGE_PROBS['A']}, B {STAGE_PROBS['B']}"}
    out.update(_score_vs_binary(rng, reps, plan.alpha, pool_a, pool_b, plan))
    return out


def checkpoint_outcomes(run_dir: Path, episodes: int) -> dict:
    """Evaluate the first and the last model of a finished ``h1-training demo`` run on ``episodes`` fresh seeded
    episodes each (the policy alone; success and partial credit per trial); saved in the run folder."""
    from h1_training.workflow.sim_learning import evaluate_checkpoints

    return evaluate_checkpoints(run_dir, episodes)


def _checkpoint_part(rng: np.random.Generator, reps: int, alpha: float, outcomes: dict, source: str) -> dict:
    """The partial-credit comparison on the scores the simulated task produced for two real checkpoints."""
    first, last = outcomes["first"], outcomes["last"]
    pool_a = np.array([t["score"] for t in first["trials"]], dtype=float)
    pool_b = np.array([t["score"] for t in last["trials"]], dtype=float)
    out = {"source": source, "model_a": first["model_id"], "model_b": last["model_id"],
           "trials_per_model": [len(pool_a), len(pool_b)],
           "score": "1 on success, else 0.9 x the share of 25 cm the hand closed past the 5 cm tolerance "
                    "(sim.reach_task.partial_credit); pairs drawn with replacement from the measured trials",
           "mean_score": [round(float(pool_a.mean()), 4), round(float(pool_b.mean()), 4)]}
    if np.mean(pool_b == 1.0) <= np.mean(pool_a == 1.0):
        out["skipped"] = "the last checkpoint does not succeed more often than the first: nothing to plan for"
        return out
    out.update(_score_vs_binary(rng, reps, alpha, pool_a, pool_b))
    return out
