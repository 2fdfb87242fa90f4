"""course_lib.evidence: the t quantiles against independent oracles, the verdict rule, the record
and its checker. NumPy only (no Keras)."""

import doctest
import json
import math

import numpy as np
import pytest

from course_lib import evidence


def _t_density(t, df):
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    return np.exp(log_c - (df + 1) / 2 * np.log1p(t * t / df))


def _integral_0_to(q, df, points=200_001):
    """Simpson's rule for the t density on [0, q]: an oracle that shares nothing with the
    incomplete-beta implementation."""
    t = np.linspace(0.0, q, points)
    f = _t_density(t, df)
    h = q / (points - 1)
    return h / 3 * (f[0] + f[-1] + 4 * f[1:-1:2].sum() + 2 * f[2:-1:2].sum())


@pytest.mark.parametrize("df", [1, 2, 3, 4, 5, 7, 9, 14, 29, 60, 200])
@pytest.mark.parametrize("p", [0.9, 0.95, 0.975, 0.995])
def test_t_quantile_matches_numerical_integration_of_the_density(df, p):
    q = evidence.t_quantile(p, df)
    assert _integral_0_to(q, df) == pytest.approx(p - 0.5, abs=1e-10)
    assert evidence.t_quantile(1 - p, df) == pytest.approx(-q, rel=1e-12)
    assert evidence.t_cdf(q, df) == pytest.approx(p, abs=1e-13)


@pytest.mark.parametrize("p", [0.6, 0.9, 0.975, 0.999])
def test_t_quantile_matches_the_closed_forms_for_one_and_two_degrees_of_freedom(p):
    assert evidence.t_quantile(p, 1) == pytest.approx(math.tan(math.pi * (p - 0.5)), rel=1e-12)
    closed_2 = (2 * p - 1) / math.sqrt(2 * p * (1 - p))
    assert evidence.t_quantile(p, 2) == pytest.approx(closed_2, rel=1e-12)


def test_t_quantile_tends_to_the_normal_quantile():
    normal_975 = 1.959963984540054  # sqrt(2) * erfinv(0.95), checked below by bisection on erf
    assert 0.5 * (1 + math.erf(normal_975 / math.sqrt(2))) == pytest.approx(0.975, abs=1e-15)
    assert evidence.t_quantile(0.975, 1e7) == pytest.approx(normal_975, rel=1e-6)


def test_t_interval_has_its_nominal_coverage_monte_carlo():
    # 5 normal pairs per experiment: the interval must contain the true mean 95 % of the time.
    rng = np.random.default_rng(0)
    trials, hits = 4000, 0
    for sample in rng.normal(loc=0.3, scale=2.0, size=(trials, 5)):
        _, low, high = evidence.t_interval(sample)
        hits += low <= 0.3 <= high
    sigma = math.sqrt(0.95 * 0.05 / trials)
    assert abs(hits / trials - 0.95) < 4 * sigma


def test_a_percentile_bootstrap_would_be_too_narrow_for_5_pairs():
    # The module's argument for t over the bootstrap, measured: same experiments, same level.
    rng = np.random.default_rng(5)
    trials, t_hits, boot_hits = 1500, 0, 0
    for sample in rng.normal(size=(trials, 5)):
        _, low, high = evidence.t_interval(sample)
        t_hits += low <= 0.0 <= high
        means = sample[rng.integers(0, 5, size=(1000, 5))].mean(axis=1)
        low, high = np.percentile(means, [2.5, 97.5])
        boot_hits += low <= 0.0 <= high
    sigma = math.sqrt(0.95 * 0.05 / trials)
    assert abs(t_hits / trials - 0.95) < 4 * sigma
    assert boot_hits / trials < 0.95 - 10 * sigma  # about 0.84


def test_t_interval_matches_numpy():
    x = np.random.default_rng(1).normal(size=7)
    mean, low, high = evidence.t_interval(x)
    half = evidence.t_quantile(0.975, 6) * np.std(x, ddof=1) / np.sqrt(7)
    np.testing.assert_allclose([mean, low, high], [x.mean(), x.mean() - half, x.mean() + half],
                               rtol=1e-12)


def _arms(differences, seed=0):
    """Two arms whose per-seed differences are exactly ``differences`` (up to rounding)."""
    b = np.random.default_rng(seed).uniform(0.8, 0.9, size=len(differences))
    return b + np.asarray(differences), b


def _expected_verdict(result, threshold, higher_is_better):
    """The rule, restated: which side of the threshold is the whole interval on?"""
    d = np.asarray(result.a) - np.asarray(result.b)
    half = evidence.t_quantile(0.975, len(d) - 1) * np.std(d, ddof=1) / np.sqrt(len(d))
    low, high = d.mean() - half, d.mean() + half
    if higher_is_better:
        return "holds" if low > threshold else "does not hold" if high < threshold else "inconclusive"
    return "holds" if high < threshold else "does not hold" if low > threshold else "inconclusive"


@pytest.mark.parametrize("centre, verdict", [(0.02, "holds"), (-0.02, "does not hold"),
                                             (0.0005, "inconclusive")])
@pytest.mark.parametrize("higher_is_better", [True, False])
def test_the_three_verdicts_and_the_direction(centre, verdict, higher_is_better):
    noise = np.random.default_rng(2).normal(scale=0.003, size=6)
    noise -= noise.mean()
    a, b = _arms(centre + noise)
    result = evidence.paired_comparison(a, b, seeds=range(10, 16), threshold=0.0, claim="c",
                                        higher_is_better=higher_is_better)
    assert result.verdict == _expected_verdict(result, 0.0, higher_is_better)
    if verdict == "inconclusive":
        assert result.verdict == "inconclusive"
    elif higher_is_better:
        assert result.verdict == verdict
    else:  # a lower-is-better claim on the same numbers gets the mirrored verdict
        assert result.verdict == {"holds": "does not hold", "does not hold": "holds"}[verdict]


def test_the_threshold_is_not_zero_only():
    a, b = _arms(0.010 + np.random.default_rng(3).normal(scale=0.001, size=5))
    above = evidence.paired_comparison(a, b, seeds=range(5), threshold=0.005, claim="c")
    below = evidence.paired_comparison(a, b, seeds=range(5), threshold=0.02, claim="c")
    assert (above.verdict, below.verdict) == ("holds", "does not hold")
    assert above.ci_low > 0.005 and below.ci_high < 0.02


def test_evidence_fields_and_describe():
    a, b = _arms([0.012, 0.018, 0.010, 0.016, 0.014])
    result = evidence.paired_comparison(a, b, seeds=[3, 1, 4, 5, 9], threshold=0.0,
                                        claim="BN helps", unit="points", scale=100,
                                        labels=("BN", "no BN"))
    d = np.asarray(a) - np.asarray(b)
    assert result.n == 5 and result.seeds == (3, 1, 4, 5, 9) and result.kind == "paired"
    assert result.mean == pytest.approx(d.mean()) == result.mean_difference
    np.testing.assert_allclose(result.differences, d, rtol=1e-12)
    assert result.protocol == evidence.PROTOCOL
    assert result.describe() == (f"{100 * result.mean:+.1f} points [{100 * result.ci_low:.1f}, "
                                 f"{100 * result.ci_high:.1f}] (95% t-interval, 5 paired seeds)")
    assert "BN − no BN" in result.rule and "above +0.0" not in result.rule
    record = result.as_record()
    assert json.loads(json.dumps(record)) == record  # plain JSON types only


def test_the_rule_is_fixed_by_the_plan_alone():
    plan = evidence.Plan(claim="c", quantity="q", threshold=0.01, unit="points", scale=100,
                         higher_is_better=False)
    assert plan.rule == evidence.Plan(claim="other", quantity="q", threshold=0.01,
                                      unit="points", scale=100, higher_is_better=False).rule
    assert "below +1.0 points" in plan.rule and "entirely above" in plan.rule
    result = plan.compare(*_arms([0.001, 0.002, 0.0, -0.001, 0.003]), seeds=range(5))
    assert result.rule == plan.rule


def test_single_arm():
    values = 0.95 + np.random.default_rng(4).normal(scale=0.004, size=5)
    result = evidence.single_arm(values, seeds=range(5), threshold=0.9, claim="reaches 90 %")
    mean, low, high = evidence.t_interval(values)
    assert (result.kind, result.b, result.verdict) == ("single", None, "holds")
    assert (result.mean, result.ci_low, result.ci_high) == (mean, low, high)
    assert result.describe().endswith("(95% t-interval, 5 seeds)")
    assert evidence.check_record(result.as_record()).verdict == "holds"


def test_timing_rounds_are_named_as_such():
    # A timing repeated on one machine is not a set of seeds: the rule, the one-line summary and
    # the record say "timing rounds", and the record's check re-derives the same rule.
    plan = evidence.Plan(claim="c", quantity="time ratio", threshold=0.9, higher_is_better=False,
                         paired=False, replicates="timing rounds")
    result = plan.measure([0.80, 0.82, 0.79, 0.81, 0.83, 0.80, 0.78], seeds=range(7))
    assert "at least 5 timing rounds" in result.rule and "seeds" not in result.rule
    assert result.describe().endswith("(95% t-interval, 7 timing rounds)")
    assert evidence.check_record(result.as_record()).describe() == result.describe()
    with pytest.raises(ValueError, match=r"`replicates` must be one of .*Received: replicates='runs'"):
        evidence.Plan(claim="c", quantity="q", threshold=0.0, replicates="runs")
    with pytest.raises(ValueError, match=r"at least 5 timing rounds.*\(4 timing rounds\)"):
        plan.measure([0.8] * 4, seeds=range(4))


@pytest.mark.parametrize("a, b, seeds, match", [
    ([1, 2, 3, 4], [1, 2, 3, 4], range(4), r"`a` must hold the results of at least 5 seeds.*Received: a=\[1.0, 2.0"),
    ([1, 2, 3, 4, 5], [1, 2, 3, 4], range(5), r"Received: len\(a\)=5, len\(b\)=4"),
    ([1, 2, 3, 4, float("nan")], [1] * 5, range(5), r"`a` must hold finite numbers"),
    ([1, 2, 3, 4, 5], [1] * 5, range(4), r"`seeds` must hold 5 distinct integers"),
    ([1, 2, 3, 4, 5], [1] * 5, [0, 1, 2, 3, 3], r"Received: seeds=\(0, 1, 2, 3, 3\)"),
    ("abcde", [1] * 5, range(5), r"`a` must be a 1-D sequence of numbers"),
])
def test_bad_inputs_are_rejected_with_the_argument_named(a, b, seeds, match):
    with pytest.raises(ValueError, match=match):
        evidence.paired_comparison(a, b, seeds=seeds, threshold=0.0, claim="c")


@pytest.mark.parametrize("kwargs, match", [
    ({"threshold": float("inf")}, r"`threshold` must be a finite number. Received: threshold=inf"),
    ({"claim": ""}, r"`claim` must be a non-empty string. Received: claim=''"),
    ({"higher_is_better": 1}, r"`higher_is_better` must be True or False. Received: higher_is_better=1"),
    ({"scale": 0}, r"`scale` must be a positive number. Received: scale=0"),
])
def test_bad_plans_are_rejected(kwargs, match):
    args = {"a": [1.0] * 5, "b": [0.0] * 5, "seeds": range(5), "threshold": 0.0, "claim": "c"}
    with pytest.raises(ValueError, match=match):
        evidence.paired_comparison(**{**args, **kwargs})


def test_t_quantile_rejects_bad_arguments():
    with pytest.raises(ValueError, match=r"`p` must be strictly between 0 and 1. Received: p=1.0"):
        evidence.t_quantile(1.0, 4)
    with pytest.raises(ValueError, match=r"`df` must be a positive number. Received: df=0"):
        evidence.t_quantile(0.9, 0)


def _record():
    a, b = _arms([0.012, 0.018, 0.010, 0.016, 0.014])
    return evidence.paired_comparison(a, b, seeds=range(5), threshold=0.0, claim="c").as_record()


@pytest.mark.parametrize("tamper, match", [
    (lambda r: r.update(verdict="does not hold"), r"`record\['verdict'\]` does not follow"),
    (lambda r: r["b"].__setitem__(0, r["a"][0] + 1.0), r"`record\['mean'\]` does not follow"),
    (lambda r: r.update(ci_low=r["ci_low"] - 0.01), r"`record\['ci_low'\]` does not follow"),
    (lambda r: [r[k].pop() for k in ("a", "b", "seeds")] and r.update(n=4), r"at least 5 seeds"),
    (lambda r: r.update(protocol="bootstrap/v0"), r"not of the protocol"),
    (lambda r: r.update(threshold=-0.05), r"`record\['rule'\]` is not the rule"),
    (lambda r: r.update(seeds=[0, 0, 1, 2, 3]), r"`seeds` must hold 5 distinct integers"),
    (lambda r: r.pop("verdict"), r"lacks the fields \['verdict'\]"),
])
def test_check_record_catches_a_tampered_record(tamper, match):
    record = _record()
    assert evidence.check_record(record).verdict == record["verdict"]
    tamper(record)
    with pytest.raises(ValueError, match=match):
        evidence.check_record(record)


def test_glue_comparison_and_reading_the_record_back():
    a, b = _arms([0.012, 0.018, 0.010, 0.016, 0.014])
    result = evidence.paired_comparison(a, b, seeds=range(5), threshold=0.0, claim="c",
                                        unit="points", scale=100)
    glued = {}

    def glue(name, value, display=True):
        assert display is False
        glued[name] = value

    evidence.glue_comparison(glue, "ch99_claim", result)
    assert set(glued) == {f"ch99_claim_{s}" for s in ("verdict", "measured", "rule", "record")}
    assert all(isinstance(v, str) for v in glued.values())
    assert glued["ch99_claim_verdict"] == result.verdict
    assert glued["ch99_claim_measured"] == result.describe()
    assert glued["ch99_claim_rule"] == result.rule
    # myst-nb stores a glued string as its repr (text/plain); both forms read back.
    for text in (glued["ch99_claim_record"], repr(glued["ch99_claim_record"])):
        record = evidence.record_from_glue(text)
        assert record == result.as_record()
        assert evidence.check_record(record) == result
    with pytest.raises(ValueError, match=r"`result` must be an Evidence"):
        evidence.glue_comparison(glue, "k", result.as_record())


def test_doctests():
    assert doctest.testmod(evidence).failed == 0
