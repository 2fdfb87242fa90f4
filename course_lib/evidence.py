"""The book's evidence protocol: paired seeds, a 95 % t-interval, and a rule fixed in advance.

Every verdict in the book is reached the same way:

1. **Before any number is computed**, the claim is written down with a threshold and a direction
   (:class:`Plan`): "BN before the sigmoid raises the test accuracy after 2,000 steps by more
   than 0 points". Its :attr:`Plan.rule` states the verdict rule in words.
2. Both arms of the comparison are trained on the **same seeds** (same initial weights where the
   shapes agree, same mini-batches; :mod:`course_lib.replicas` trains K seeds at once), at least
   :data:`MIN_SEEDS` of them.
3. The per-seed differences ``a - b`` get a mean and a 95 % Student-t confidence interval, and
   the verdict follows mechanically: **"holds"** if the whole interval lies past the threshold in
   the claim's direction, **"does not hold"** if it lies wholly on the other side,
   **"inconclusive"** if it contains the threshold.

A claim that is not a comparison ("a BN network reaches 95 % within 1,000 steps") uses the
single-arm version: one quantity per seed against the threshold.

>>> plan = Plan(claim="BN raises the final accuracy", quantity="accuracy with BN - without",
...             threshold=0.0, unit="points", scale=100)
>>> result = plan.compare([0.93, 0.94, 0.95, 0.92, 0.94], [0.91, 0.93, 0.93, 0.91, 0.92],
...                       seeds=range(5))
>>> result.verdict, result.describe()
('holds', '+1.6 points [0.9, 2.3] (95% t-interval, 5 paired seeds)')

Why a t-interval and not a bootstrap: with 5 to 10 pairs the bootstrap's resamples can only
reproduce the spread seen in the sample (the plug-in standard deviation, which divides by n), and
its percentile interval ignores that this spread is itself a noisy estimate. Its actual coverage
with normal pairs is about 84 % for 5 pairs and 91 % for 10 (Monte Carlo, checked in
``tests/test_evidence.py``), not 95 %: too narrow. Student's t with ``n - 1`` degrees of freedom
is exact for normal differences and widens the interval by the right amount for a standard
deviation estimated from few pairs (2.776 standard errors for 5 pairs instead of 1.96). Its
assumption, roughly normal differences, cannot be checked with 5 seeds either way; the t-interval
is the conservative default. Quantiles come from :func:`t_quantile`, an exact implementation (the
regularized incomplete beta function and bisection), so no SciPy is needed.

For the book, :func:`glue_comparison` glues the verdict, the measured interval, the rule and the
whole record (JSON) under one key; :func:`check_record` re-derives the verdict from a record's
per-seed values, which the ledger's guard test does for every row.
"""

import ast
import dataclasses
import functools
import json
import math
import numbers

__all__ = [
    "PROTOCOL",
    "MIN_SEEDS",
    "CONFIDENCE",
    "VERDICTS",
    "REPLICATES",
    "t_cdf",
    "t_quantile",
    "t_interval",
    "decide",
    "Plan",
    "Evidence",
    "paired_comparison",
    "single_arm",
    "check_record",
    "glue_comparison",
    "record_from_glue",
]

#: Identifies this protocol in every record; :func:`check_record` refuses any other.
PROTOCOL = "course_lib.evidence/paired-t95/v1"
#: The fewest seeds (pairs) a verdict may rest on.
MIN_SEEDS = 5
#: The confidence level of the intervals.
CONFIDENCE = 0.95
#: The three verdicts, in the order "the claim is supported", "refuted", "undecided".
VERDICTS = ("holds", "does not hold", "inconclusive")
#: What one repetition of a measurement can be: a training run per seed, or a timing round.
REPLICATES = ("seeds", "timing rounds")
_KINDS = ("paired", "single")


# --- Student's t distribution, exactly --------------------------------------------------------


def _betacf(a, b, x):
    """Continued fraction of the incomplete beta function (modified Lentz's method)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 1000):
        m2 = 2 * m
        for aa in (m * (b - m) * x / ((qam + m2) * (a + m2)),
                   -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-16:
            return h
    raise ArithmeticError(f"incomplete beta did not converge: a={a}, b={b}, x={x}")


def _betainc(a, b, x):
    """The regularized incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                 + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def _check_df(df):
    if isinstance(df, bool) or not isinstance(df, numbers.Real) or not df > 0:
        raise ValueError(f"`df` must be a positive number. Received: df={df!r}")
    return float(df)


def t_cdf(t, df):
    """``P(T <= t)`` for Student's t with ``df`` degrees of freedom.

    Uses ``P(|T| > |t|) = I_{df / (df + t**2)}(df / 2, 1 / 2)`` (regularized incomplete beta).
    """
    df = _check_df(df)
    t = float(t)
    if math.isnan(t):
        return math.nan
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t)) if math.isfinite(t) else 0.0
    return 1.0 - tail if t > 0 else tail


@functools.lru_cache(maxsize=256)
def _t_quantile(p, df):
    if p == 0.5:
        return 0.0
    if p < 0.5:
        return -_t_quantile(1.0 - p, df)
    low, high = 0.0, 1.0
    while t_cdf(high, df) < p:
        low, high = high, 2.0 * high
    for _ in range(200):  # bisection to the last bit: the CDF is monotone
        mid = 0.5 * (low + high)
        if mid in (low, high):
            break
        if t_cdf(mid, df) < p:
            low = mid
        else:
            high = mid
    return 0.5 * (low + high)


def t_quantile(p, df):
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (exact, no SciPy).

    >>> round(t_quantile(0.975, 4), 4)      # the 2.776 of chapter 4
    2.7764
    """
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0.0 < p < 1.0:
        raise ValueError(f"`p` must be strictly between 0 and 1. Received: p={p!r}")
    return _t_quantile(float(p), _check_df(df))


# --- Intervals and verdicts -------------------------------------------------------------------


def _values(name, values):
    """``values`` as a tuple of finite floats, or the house-style ValueError."""
    if isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
        try:
            values = list(values)
        except TypeError:
            raise ValueError(f"`{name}` must be a sequence of numbers. "
                             f"Received: {name}={values!r}") from None
    try:
        out = tuple(float(v) for v in (values.tolist() if hasattr(values, "tolist") else values))
    except (TypeError, ValueError):
        raise ValueError(f"`{name}` must be a 1-D sequence of numbers. "
                         f"Received: {name}={values!r}") from None
    bad = [i for i, v in enumerate(out) if not math.isfinite(v)]
    if bad:
        raise ValueError(f"`{name}` must hold finite numbers (a diverged run must be scored, "
                         f"not dropped). Received: {name}={list(out)!r}, not finite at {bad}")
    return out


def t_interval(values, confidence=CONFIDENCE):
    """Mean of ``values`` and its two-sided Student-t confidence interval.

    ``mean +- t_quantile((1 + confidence) / 2, n - 1) * sd / sqrt(n)``, with ``sd`` the sample
    standard deviation (divisor ``n - 1``).

    Returns:
        ``(mean, low, high)`` as floats.
    """
    values = _values("values", values)
    n = len(values)
    if n < 2:
        raise ValueError(f"`values` must hold at least 2 numbers. Received: values={list(values)!r}")
    if isinstance(confidence, bool) or not isinstance(confidence, numbers.Real) \
            or not 0.0 < confidence < 1.0:
        raise ValueError(f"`confidence` must be strictly between 0 and 1. "
                         f"Received: confidence={confidence!r}")
    mean = math.fsum(values) / n
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_quantile((1.0 + confidence) / 2.0, n - 1) * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def decide(low, high, threshold, higher_is_better=True):
    """The verdict for an interval ``[low, high]`` and a claim "above (or below) ``threshold``".

    With ``higher_is_better=True`` the claim is "the quantity exceeds ``threshold``": "holds" if
    ``low > threshold``, "does not hold" if ``high < threshold``, "inconclusive" otherwise (the
    interval contains or touches the threshold). ``higher_is_better=False`` mirrors it.
    """
    if not low <= high:
        raise ValueError(f"`low` must be at most `high`. Received: low={low!r}, high={high!r}")
    above, below = low > threshold, high < threshold
    if not higher_is_better:
        above, below = below, above
    return VERDICTS[0] if above else VERDICTS[1] if below else VERDICTS[2]


def _fmt(value, scale, digits, sign=False):
    return f"{value * scale:{'+' if sign else ''}.{digits}f}"


@dataclasses.dataclass(frozen=True)
class Plan:
    """A claim and its verdict rule, fixed before the numbers are measured.

    Attributes:
        claim: The claim in words ("BN before the sigmoid trains faster").
        quantity: What is measured per seed ("test accuracy after 2,000 steps, BN − no BN"); for
            a paired plan, the difference of the two arms.
        threshold: The claim is that the quantity's mean lies above it (or below it with
            ``higher_is_better=False``), in the quantity's own units (a fraction for accuracies).
        higher_is_better: Direction of the claim.
        paired: True for a two-arm comparison on the same seeds, False for one arm.
        unit: Unit of the displayed numbers ("points", "steps"...), after ``scale``.
        scale: Factor from the quantity to the displayed numbers (100: fractions as points).
        digits: Decimals of the displayed numbers.
        labels: Names of the two arms, ``(a, b)``, for the record.
        replicates: What one repetition of the measurement is, in the plural: ``"seeds"`` for
            training runs (one per seed), ``"timing rounds"`` for a timing repeated on one
            machine. It names them in the rule and in :meth:`Evidence.describe`.
    """

    claim: str
    quantity: str
    threshold: float
    higher_is_better: bool = True
    paired: bool = True
    unit: str = ""
    scale: float = 1.0
    digits: int = 1
    labels: tuple = ("a", "b")
    replicates: str = "seeds"

    def __post_init__(self):
        for name in ("claim", "quantity"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"`{name}` must be a non-empty string. Received: {name}={value!r}")
        t = self.threshold
        if isinstance(t, bool) or not isinstance(t, numbers.Real) or not math.isfinite(t):
            raise ValueError(f"`threshold` must be a finite number. Received: threshold={t!r}")
        object.__setattr__(self, "threshold", float(t))
        for name in ("higher_is_better", "paired"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"`{name}` must be True or False. "
                                 f"Received: {name}={getattr(self, name)!r}")
        s = self.scale
        if isinstance(s, bool) or not isinstance(s, numbers.Real) or not (math.isfinite(s) and s > 0):
            raise ValueError(f"`scale` must be a positive number. Received: scale={s!r}")
        object.__setattr__(self, "scale", float(s))
        d = self.digits
        if isinstance(d, bool) or not isinstance(d, numbers.Integral) or not 0 <= d <= 12:
            raise ValueError(f"`digits` must be an integer in [0, 12]. Received: digits={d!r}")
        if not isinstance(self.unit, str):
            raise ValueError(f"`unit` must be a string. Received: unit={self.unit!r}")
        labels = tuple(self.labels) if isinstance(self.labels, (list, tuple)) else None
        if not labels or len(labels) != 2 or not all(isinstance(x, str) for x in labels):
            raise ValueError(f"`labels` must be two strings. Received: labels={self.labels!r}")
        object.__setattr__(self, "labels", labels)
        if self.replicates not in REPLICATES:
            raise ValueError(f"`replicates` must be one of {REPLICATES}. "
                             f"Received: replicates={self.replicates!r}")

    @property
    def rule(self):
        """The verdict rule in one sentence, from the plan alone (no measured number in it)."""
        side, other = ("above", "below") if self.higher_is_better else ("below", "above")
        unit = f" {self.unit}" if self.unit else ""
        threshold = _fmt(self.threshold, self.scale, self.digits, sign=self.threshold != 0)
        over = f"at least {MIN_SEEDS} {'paired ' if self.paired else ''}{self.replicates}"
        return (f"holds if the {CONFIDENCE:.0%} t-interval of the mean of ({self.quantity}) over "
                f"{over} lies entirely {side} {threshold}{unit}; does not hold if it lies "
                f"entirely {other}; inconclusive if it contains {threshold}{unit}")

    def compare(self, a, b, *, seeds):
        """Apply the plan to the per-seed results of two arms on the same seeds.

        Args:
            a, b: One number per seed for each arm, in the order of ``seeds``; the measured
                quantity is ``a - b``.
            seeds: The seeds, one per pair (distinct).

        Returns:
            An :class:`Evidence`.
        """
        if not self.paired:
            raise ValueError("This plan is for one arm: call `measure(values, seeds=...)`. "
                             f"Received: paired={self.paired!r}")
        a, b = _values("a", a), _values("b", b)
        if len(a) != len(b):
            raise ValueError(f"`a` and `b` must hold one number per seed each (paired). "
                             f"Received: len(a)={len(a)}, len(b)={len(b)}")
        return self._evidence(a, b, seeds)

    def measure(self, values, *, seeds):
        """Apply a single-arm plan to one number per seed (the quantity itself)."""
        if self.paired:
            raise ValueError("This plan compares two arms: call `compare(a, b, seeds=...)`. "
                             f"Received: paired={self.paired!r}")
        return self._evidence(_values("values", values), None, seeds)

    def _evidence(self, a, b, seeds):
        name = "a" if b is not None else "values"
        if len(a) < MIN_SEEDS:
            raise ValueError(f"`{name}` must hold the results of at least {MIN_SEEDS} {self.replicates}. "
                             f"Received: {name}={list(a)!r} ({len(a)} {self.replicates})")
        seeds = _seeds(seeds, len(a))
        diffs = a if b is None else tuple(x - y for x, y in zip(a, b))
        mean, low, high = t_interval(diffs)
        return Evidence(
            protocol=PROTOCOL, kind="paired" if b is not None else "single", claim=self.claim,
            quantity=self.quantity, rule=self.rule, threshold=self.threshold,
            higher_is_better=self.higher_is_better, confidence=CONFIDENCE, seeds=seeds,
            n=len(a), a=a, b=b, labels=self.labels, mean=mean, ci_low=low, ci_high=high,
            verdict=decide(low, high, self.threshold, self.higher_is_better),
            unit=self.unit, scale=self.scale, digits=self.digits, replicates=self.replicates)


def _seeds(seeds, n):
    try:
        seeds = tuple(seeds.tolist() if hasattr(seeds, "tolist") else seeds)
    except TypeError:
        raise ValueError(f"`seeds` must be a sequence of distinct integers. "
                         f"Received: seeds={seeds!r}") from None
    if (len(seeds) != n or len(set(seeds)) != n
            or not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) for s in seeds)):
        raise ValueError(f"`seeds` must hold {n} distinct integers, one per result. "
                         f"Received: seeds={seeds!r}")
    return tuple(int(s) for s in seeds)


@dataclasses.dataclass(frozen=True)
class Evidence:
    """A verdict and everything it rests on (see :class:`Plan` for the claim's fields).

    Attributes:
        protocol: :data:`PROTOCOL`.
        kind: ``"paired"`` (``a - b`` per seed) or ``"single"`` (``a`` per seed).
        claim, quantity, rule, threshold, higher_is_better: From the plan.
        confidence: 0.95.
        seeds: The seeds, one per pair.
        n: The number of seeds.
        a, b: Per-seed results of the two arms (``b`` is None for a single arm).
        labels: Names of the arms.
        mean: Mean of the paired differences ``a - b`` (single arm: of ``a``).
        ci_low, ci_high: Its 95 % Student-t confidence interval (``n - 1`` degrees of freedom).
        verdict: One of :data:`VERDICTS`.
        unit, scale, digits: How :meth:`describe` displays the numbers.
        replicates: What the repetitions are (``"seeds"`` or ``"timing rounds"``).
    """

    protocol: str
    kind: str
    claim: str
    quantity: str
    rule: str
    threshold: float
    higher_is_better: bool
    confidence: float
    seeds: tuple
    n: int
    a: tuple
    b: tuple
    labels: tuple
    mean: float
    ci_low: float
    ci_high: float
    verdict: str
    unit: str = ""
    scale: float = 1.0
    digits: int = 1
    replicates: str = "seeds"

    @property
    def mean_difference(self):
        """:attr:`mean` (the mean paired difference)."""
        return self.mean

    @property
    def differences(self):
        """The per-seed values of the quantity: ``a - b`` (single arm: ``a``)."""
        return self.a if self.b is None else tuple(x - y for x, y in zip(self.a, self.b))

    def describe(self):
        """One line: ``"+1.4 points [0.6, 2.2] (95% t-interval, 5 paired seeds)"``."""
        unit = f" {self.unit}" if self.unit else ""
        seeds = f"{self.n} {'paired ' if self.kind == 'paired' else ''}{self.replicates}"
        return (f"{_fmt(self.mean, self.scale, self.digits, sign=self.kind == 'paired')}{unit} "
                f"[{_fmt(self.ci_low, self.scale, self.digits)}, "
                f"{_fmt(self.ci_high, self.scale, self.digits)}] "
                f"({self.confidence:.0%} t-interval, {seeds})")

    def as_record(self):
        """A plain, JSON-serialisable dict of every field (tuples become lists)."""
        record = dataclasses.asdict(self)
        for key in ("seeds", "a", "b", "labels"):
            if record[key] is not None:
                record[key] = list(record[key])
        return record


def paired_comparison(a, b, *, seeds, threshold, claim, quantity=None, higher_is_better=True,
                      unit="", scale=1.0, digits=1, labels=("a", "b")):
    """Compare two arms run on the same seeds: ``Plan(...).compare(a, b, seeds=seeds)``.

    Args:
        a, b: One result per seed for each arm (same order as ``seeds``), at least
            :data:`MIN_SEEDS` of them.
        seeds: The seeds.
        threshold: The claim is that the mean of ``a - b`` exceeds it (``higher_is_better``) or
            stays below it.
        claim: The claim in words.
        quantity: What ``a - b`` is, in words; default ``"<labels[0]> − <labels[1]>"``.
        higher_is_better, unit, scale, digits, labels: As for :class:`Plan`.

    Returns:
        An :class:`Evidence`. In a chapter, prefer writing the :class:`Plan` in a cell *before*
        the training, so that the rule is on the page before the numbers.
    """
    if quantity is None:
        quantity = f"{labels[0]} − {labels[1]}" if len(labels) == 2 else "a − b"
    plan = Plan(claim=claim, quantity=quantity, threshold=threshold,
                higher_is_better=higher_is_better, paired=True, unit=unit, scale=scale,
                digits=digits, labels=labels)
    return plan.compare(a, b, seeds=seeds)


def single_arm(values, *, seeds, threshold, claim, quantity="the measured value",
               higher_is_better=True, unit="", scale=1.0, digits=1, label="a"):
    """A claim about one quantity per seed against ``threshold`` (not a comparison).

    Same protocol as :func:`paired_comparison` with the values themselves in place of the
    differences: the verdict is "holds" if the 95 % t-interval of their mean lies entirely past
    ``threshold`` in the claim's direction.
    """
    plan = Plan(claim=claim, quantity=quantity, threshold=threshold,
                higher_is_better=higher_is_better, paired=False, unit=unit, scale=scale,
                digits=digits, labels=(label, ""))
    return plan.measure(values, seeds=seeds)


_RECORD_FIELDS = tuple(f.name for f in dataclasses.fields(Evidence))


def check_record(record, *, rtol=1e-9):
    """Re-derive a record's interval and verdict from its per-seed values; raise if they differ.

    Checks that ``record`` (a dict from :meth:`Evidence.as_record`, or its JSON string) is of
    this protocol (:data:`PROTOCOL`), rests on at least :data:`MIN_SEEDS` distinct seeds with one
    result per seed in each arm, states the rule its plan implies, and that the mean, the
    interval and the verdict recomputed from the per-seed values are the recorded ones.

    Returns:
        The recomputed :class:`Evidence`.

    Raises:
        ValueError: Naming the first thing that does not match.
    """
    if isinstance(record, str):
        try:
            record = json.loads(record)
        except json.JSONDecodeError as error:
            raise ValueError(f"`record` is not valid JSON ({error}). "
                             f"Received: record={record[:200]!r}") from None
    if not isinstance(record, dict):
        raise ValueError(f"`record` must be a dict from Evidence.as_record(). "
                         f"Received: record={record!r}")
    missing = [k for k in _RECORD_FIELDS if k not in record]
    if missing:
        raise ValueError(f"`record` lacks the fields {missing}. Received keys: {sorted(record)}")
    if record["protocol"] != PROTOCOL:
        raise ValueError(f"`record` is not of the protocol {PROTOCOL!r}. "
                         f"Received: protocol={record['protocol']!r}")
    if record["kind"] not in _KINDS:
        raise ValueError(f"`record['kind']` must be one of {_KINDS}. Received: kind={record['kind']!r}")
    paired = record["kind"] == "paired"
    if paired == (record["b"] is None):
        raise ValueError(f"A {record['kind']} record must {'' if paired else 'not '}hold `b`. "
                         f"Received: b={record['b']!r}")
    a = record["a"]
    if not isinstance(a, list) or len(a) < MIN_SEEDS:
        raise ValueError(f"The verdict must rest on at least {MIN_SEEDS} seeds. "
                         f"Received: a={a!r}")
    if record["n"] != len(a) or record["confidence"] != CONFIDENCE:
        raise ValueError(f"`record` must have n = len(a) and confidence {CONFIDENCE}. "
                         f"Received: n={record['n']!r}, len(a)={len(a)}, "
                         f"confidence={record['confidence']!r}")
    plan = Plan(claim=record["claim"], quantity=record["quantity"], threshold=record["threshold"],
                higher_is_better=record["higher_is_better"], paired=paired, unit=record["unit"],
                scale=record["scale"], digits=record["digits"], labels=tuple(record["labels"]),
                replicates=record["replicates"])
    redone = (plan.compare(a, record["b"], seeds=record["seeds"]) if paired
              else plan.measure(a, seeds=record["seeds"]))
    if record["rule"] != redone.rule:
        raise ValueError(f"`record['rule']` is not the rule of its claim and threshold. "
                         f"Received: rule={record['rule']!r}, expected {redone.rule!r}")
    for key in ("mean", "ci_low", "ci_high"):
        got, want = record[key], getattr(redone, key)
        if not (isinstance(got, numbers.Real)
                and abs(got - want) <= rtol * max(1.0, abs(want), abs(redone.mean))):
            raise ValueError(f"`record[{key!r}]` does not follow from the per-seed values. "
                             f"Received: {key}={got!r}, recomputed {want!r}")
    if record["verdict"] != redone.verdict:
        raise ValueError(f"`record['verdict']` does not follow from the per-seed values. "
                         f"Received: verdict={record['verdict']!r}, recomputed {redone.verdict!r}")
    return redone


def glue_comparison(glue, key, result):
    """Glue ``result`` (an :class:`Evidence`) into the book under ``key``.

    Four strings, for ``{glue:text}`key_…`:s`` in the text and the ledger:

    - ``key_verdict``: "holds", "does not hold" or "inconclusive";
    - ``key_measured``: :meth:`Evidence.describe`;
    - ``key_rule``: the rule, as fixed by the plan;
    - ``key_record``: ``json.dumps(result.as_record())``, for the guard test
      (:func:`record_from_glue` reads it back, :func:`check_record` checks it).

    Args:
        glue: ``myst_nb.glue`` (or the chapters' no-op fallback), called as
            ``glue(name, value, display=False)``.
        key: The key prefix, e.g. ``"ch01_bn_faster"``.
        result: An :class:`Evidence`.

    Returns:
        The dict of glued names and values.
    """
    if not isinstance(result, Evidence):
        raise ValueError(f"`result` must be an Evidence. Received: result={result!r}")
    if not isinstance(key, str) or not key.isidentifier():
        raise ValueError(f"`key` must be an identifier-like string. Received: key={key!r}")
    values = {
        f"{key}_verdict": result.verdict,
        f"{key}_measured": result.describe(),
        f"{key}_rule": result.rule,
        f"{key}_record": json.dumps(result.as_record(), ensure_ascii=False),
    }
    for name, value in values.items():
        glue(name, value, display=False)
    return values


def record_from_glue(text):
    """The record dict of a ``key_record`` glued value, as an executed notebook stores it.

    myst-nb stores a glued string as its ``repr`` (``text/plain``); both that and the bare JSON
    are accepted.
    """
    if not isinstance(text, str):
        raise ValueError(f"`text` must be a string. Received: text={text!r}")
    stripped = text.strip()
    if stripped[:1] in ("'", '"'):
        stripped = ast.literal_eval(stripped)
    try:
        return json.loads(stripped)
    except json.JSONDecodeError as error:
        raise ValueError(f"`text` is not a glued record ({error}). Received: text={text[:200]!r}") from None
