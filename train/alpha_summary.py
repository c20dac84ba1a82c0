"""The alpha experiment's summary: mean ± sd over seeds, paired per-case comparisons and the printed table
(train.alpha_experiment runs the experiment)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

# A run whose raw training loss changed by more than this over its last fifth of epochs has not flattened.
FLAT_LOSS_CHANGE = 0.05


def _finite(values: Sequence[float | None]) -> list[float]:
    return [v for v in values if v is not None and not math.isnan(v)]


def _mean_sd(values: Sequence[float | None], scale: float = 1.0, digits: int = 3) -> str:
    values = _finite(values)
    if not values:
        return "n/a"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{scale * statistics.fmean(values):.{digits}f} ± {scale * sd:.{digits}f}"


def paired(a_runs: list[list[dict]], b_runs: list[list[dict]], key: str) -> dict:
    """Per case, the mean over seeds of ``key`` in arm a and arm b; counts of cases where each is better and a
    Wilcoxon signed-rank p value (better = higher Dice, lower FPV); None when fewer than 6 cases differ."""
    from scipy.stats import wilcoxon

    def case_means(runs: list[list[dict]]) -> dict[str, float]:
        by_case: dict[str, list[float]] = {}
        for cases in runs:
            for row in cases:
                if row[key] is not None:
                    by_case.setdefault(row["case"], []).append(float(row[key]))
        return {case: statistics.fmean(values) for case, values in by_case.items()}

    a, b = case_means(a_runs), case_means(b_runs)
    cases = sorted(set(a) & set(b))
    sign = 1.0 if key == "dice" else -1.0
    differences = [sign * (a[c] - b[c]) for c in cases]
    nonzero = [d for d in differences if abs(d) > 1e-9]
    p_value = float(wilcoxon(nonzero).pvalue) if len(nonzero) >= 6 else None
    return {"cases": len(cases), "a_better": sum(d > 1e-9 for d in differences),
            "b_better": sum(d < -1e-9 for d in differences), "p_wilcoxon": p_value,
            "per_case": {c: [a[c], b[c]] for c in cases}}



def table(results: dict) -> str:
    m, p = results["machine"], results["phantoms"]
    shares = ", ".join(f"alpha {alpha} {share:.2f}" for alpha, share in results["lesion_share"].items())
    lines = [f"machine: {m['cpu']}, {m['threads']} thread(s) per run (CPU bf16 {m['cpu_bf16']}); precision: training "
             f"{m['training_precision']}, inference {m['inference_precision']}; torch {m['torch']}",
             f"phantoms: {p['train_cases']} training (seed {p['train_seed']}, fold 0 of split seed {p['split_seed']}), "
             f"{p['heldout_cases']} held-out (seed {p['heldout_seed']}), {p['size']}x{p['size']}x{p['slices']} at "
             f"{p['spacing']:g} x {p['thickness']:g} mm, phantoms {p['generator_sha256'][:12]}",
             f"{results['epochs']} epochs; training seeds {results['seeds']}; lesion share of an epoch's items: "
             f"{shares}",
             "",
             "| budget | alpha | steps/epoch | lesion slices drawn | min lesion ml | Dice (positives) | FPV ml (all) "
             "| FNV ml (positives) | loss change, last fifth (%) |",
             "|---|---|---|---|---|---|---|---|---|"]
    changes = {r["run"]: r["loss_change_last_fifth"] for arm in results["arms"].values() for r in arm["runs"]}
    unflattened = sum(abs(change) > FLAT_LOSS_CHANGE for change in _finite(list(changes.values())))
    for arm in results["arms"].values():
        runs = arm["runs"]
        lines.append(f"| {arm['budget']} | {arm['alpha']:g} | {arm['steps_per_epoch']} | "
                     f"{arm['lesion_slices_drawn']} | {arm['min_lesion_ml']:g} | "
                     f"{_mean_sd([r['mean']['dice'] for r in runs])} | "
                     f"{_mean_sd([r['mean']['fpv_ml'] for r in runs], digits=2)} | "
                     f"{_mean_sd([r['mean']['fnv_ml'] for r in runs], digits=2)} | "
                     f"{_mean_sd([r['loss_change_last_fifth'] for r in runs], scale=100, digits=1)} |")
    lines += ["", "mean ± sample sd over the training seeds; paired per case (means over seeds):"]
    alphas = sorted({arm["alpha"] for arm in results["arms"].values()}, reverse=True)
    for name, comparison in results["paired"].items():
        for key, what in (("dice", "higher Dice"), ("fpv_ml", "lower FPV")):
            c = comparison[key]
            p_text = "n/a (fewer than 6 differing cases)" if c["p_wilcoxon"] is None else f"{c['p_wilcoxon']:.3f}"
            lines.append(f"- {name}: {what} with alpha = {alphas[0]:g} on {c['a_better']} of {c['cases']} cases, "
                         f"with alpha = {alphas[-1]:g} on {c['b_better']}; Wilcoxon p {p_text}")
    if unflattened:
        lines.append(f"- the training loss still changed by more than {FLAT_LOSS_CHANGE:.0%} over the last fifth of "
                     f"the epochs in {unflattened} run(s): train longer")
    if "deterministic" in results:
        lines.append(f"- retrained from scratch, the first run's weights are "
                     f"{'bit-identical' if results['deterministic'] else 'DIFFERENT'}")
    return "\n".join(lines)
