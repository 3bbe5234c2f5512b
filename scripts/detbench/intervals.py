"""Medians with 95% intervals over repeated benchmarks, by a hierarchical bootstrap.

A benchmark is repeated in rounds (benchmark.repeats), every model once per round. A figure
(a latency percentile, a throughput) is computed per round, and its point estimate is the
median over rounds. Its interval resamples the rounds with replacement, then the steps within
each resampled round, recomputes the median of the rounds' figures, and takes the 2.5th and
97.5th percentiles of 2,000 such resamples: the spread between rounds (a slow spell, another
tenant) and within them (step to step) both widen it. A ratio of two models resamples the
same rounds for both: their rounds ran side by side, so a slow round slows both alike.
"""

import numpy as np

RESAMPLES = 2000
CONFIDENCE = 0.95
METHOD = (
    f"median over rounds; {CONFIDENCE:.0%} interval by a hierarchical bootstrap "
    f"({RESAMPLES} resamples of the rounds, then of the steps within each)"
)


def latency_percentile(q):
    """The figure of one round: its steps' q-th percentile latency in ms (rows: resamples)."""
    return lambda seconds: np.percentile(seconds, q, axis=-1) * 1000.0


def throughput(batch_size):
    """The figure of one round: images per second over its steps."""
    return lambda seconds: batch_size / np.mean(seconds, axis=-1)


def resampled_figures(rounds, figure, picks, rng):
    """[resample, round] figures: round `picks[i, j]` of `rounds`, its steps drawn with replacement."""
    out = np.empty(picks.shape)
    for position in range(picks.shape[1]):
        for index in np.unique(picks[:, position]):
            chosen = picks[:, position] == index
            steps = rounds[index]
            draws = steps[rng.integers(0, len(steps), size=(int(chosen.sum()), len(steps)))]
            out[chosen, position] = figure(draws)
    return out


def interval(rounds, figure, seed=0, resamples=RESAMPLES):
    """{median, low, high, rounds} of `figure` over `rounds` (each an array of step seconds)."""
    rounds = [np.asarray(steps, float) for steps in rounds if len(steps)]
    rng = np.random.default_rng(seed)
    per_round = np.array([figure(steps) for steps in rounds])
    picks = rng.integers(0, len(rounds), size=(resamples, len(rounds)))
    medians = np.median(resampled_figures(rounds, figure, picks, rng), axis=1)
    low, high = np.percentile(medians, [50 * (1 - CONFIDENCE), 50 * (1 + CONFIDENCE)])
    return {"median": float(np.median(per_round)), "low": float(low), "high": float(high), "rounds": len(rounds)}


def ratio_interval(rounds, reference_rounds, figure, seed=0, resamples=RESAMPLES):
    """{median, low, high, rounds, paired} of figure(model) / figure(reference). Rounds are
    paired by index when both ran the same number (the same rounds resampled for both)."""
    rounds = [np.asarray(steps, float) for steps in rounds]
    reference_rounds = [np.asarray(steps, float) for steps in reference_rounds]
    rng = np.random.default_rng(seed)
    paired = len(rounds) == len(reference_rounds)
    picks = rng.integers(0, len(rounds), size=(resamples, len(rounds)))
    reference_picks = picks if paired else rng.integers(0, len(reference_rounds), (resamples, len(reference_rounds)))
    model = np.median(resampled_figures(rounds, figure, picks, rng), axis=1)
    reference = np.median(resampled_figures(reference_rounds, figure, reference_picks, rng), axis=1)
    ratios = model / reference
    low, high = np.percentile(ratios, [50 * (1 - CONFIDENCE), 50 * (1 + CONFIDENCE)])
    point = np.median([figure(steps) for steps in rounds]) / np.median([figure(steps) for steps in reference_rounds])
    return {
        "median": float(point),
        "low": float(low),
        "high": float(high),
        "rounds": min(len(rounds), len(reference_rounds)),
        "paired": paired,
    }


def holds(result, value=1.0):
    """Whether the interval holds `value`: for a ratio, no difference measured."""
    return result["low"] <= value <= result["high"]
