"""Reading metrics as Prometheus does, for tests: the text exposition (format 0.0.4) line by line,
and the metric names a PromQL expression selects.

``prometheus_client``'s own parser renames counter samples (``x`` -> ``x_total``), so the wire text
is read here as it is. ``promql_metric_names`` is a small tokenizer of PromQL: it skips strings,
durations, numbers and label matchers, and keeps the identifiers that are not functions,
aggregations, keywords or label names (``by (pod)``, ``on(...)``, ``ignoring(...)``,
``group_left(...)``); a recording-rule name with colons counts as a metric.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[^"}]|"(?:[^"\\]|\\.)*")*\})?\s+(\S+)')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
_TYPE = re.compile(r"^# TYPE (\S+) (\S+)$", re.MULTILINE)

HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def samples(text: str) -> Iterator[tuple[str, dict[str, str], float]]:
    """Every sample line: (name, labels, value)."""
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if m is None:
            raise ValueError(f"not a sample line: {line!r}")
        labels = dict(_LABEL.findall(m.group(2) or ""))
        yield m.group(1), labels, float(m.group(3))


def sample(text: str, name: str, **labels: str) -> float:
    """The value of the one sample ``name`` with exactly ``labels``."""
    found = [v for n, ls, v in samples(text) if n == name and ls == labels]
    assert len(found) == 1, f"{name}{labels}: {len(found)} samples"
    return found[0]


def total(text: str, name: str, **labels: str) -> float:
    """The sum of every sample ``name`` whose labels include ``labels``."""
    return sum(v for n, ls, v in samples(text) if n == name and labels.items() <= ls.items())


def metric_names(text: str) -> set[str]:
    """The names of every sample in the text."""
    return {n for n, _, _ in samples(text)}


def families(text: str) -> dict[str, str]:
    """``# TYPE`` lines: family name -> type."""
    return dict(_TYPE.findall(text))


# -- PromQL ---------------------------------------------------------------------------------------

PROMQL_FUNCTIONS = {
    "abs", "absent", "absent_over_time", "acos", "acosh", "asin", "asinh", "atan", "atanh",
    "avg_over_time", "ceil", "changes", "clamp", "clamp_max", "clamp_min", "cos", "cosh",
    "count_over_time", "day_of_month", "day_of_week", "day_of_year", "days_in_month", "deg", "delta",
    "deriv", "exp", "floor", "histogram_avg", "histogram_count", "histogram_fraction",
    "histogram_quantile", "histogram_stddev", "histogram_stdvar", "histogram_sum", "holt_winters",
    "double_exponential_smoothing", "hour", "idelta", "increase", "info", "irate", "label_join",
    "label_replace", "last_over_time", "ln", "log10", "log2", "mad_over_time", "max_over_time",
    "min_over_time", "minute", "month", "pi", "predict_linear", "present_over_time",
    "quantile_over_time", "rad", "rate", "resets", "round", "scalar", "sgn", "sin", "sinh", "sort",
    "sort_by_label", "sort_by_label_desc", "sort_desc", "sqrt", "stddev_over_time",
    "stdvar_over_time", "sum_over_time", "tan", "tanh", "time", "timestamp", "vector", "year",
}  # fmt: skip
PROMQL_AGGREGATIONS = {
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk",
    "topk", "quantile", "limitk", "limit_ratio",
}  # fmt: skip
PROMQL_KEYWORDS = {"and", "or", "unless", "offset", "bool", "atan2", "inf", "nan", "start", "end"}
# Followed by a parenthesized list of label names, not expressions.
PROMQL_LABEL_LISTS = {"by", "without", "on", "ignoring", "group_left", "group_right"}

_TOKEN = re.compile(
    r"""(?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
      |(?P<braces>\{)
      |(?P<range>\[[^\]]*\])
      |(?P<number>(?:0x[0-9a-fA-F]+|\d+(?:\.\d*)?(?:[eE][+-]?\d+)?)(?:ms|[smhdwy])*)
      |(?P<ident>[a-zA-Z_:][a-zA-Z0-9_:]*)
      |(?P<paren>[()])
      |(?P<space>\s+)
      |(?P<other>.)""",
    re.VERBOSE,
)


def _skip_braces(expr: str, pos: int) -> int:
    """From just after ``{``: the position after its ``}`` (strings inside skipped)."""
    while pos < len(expr):
        ch = expr[pos]
        if ch == "}":
            return pos + 1
        if ch in "\"'`":
            end = _TOKEN.match(expr, pos)
            assert end is not None and end.lastgroup == "string", f"unterminated string in {expr!r}"
            pos = end.end()
        else:
            pos += 1
    raise ValueError(f"unterminated label matcher in {expr!r}")


def promql_metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (``ValueError`` for an unterminated string or
    label matcher)."""
    names: set[str] = set()
    pos = 0
    skip_label_list = False
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        assert m is not None
        kind, pos = m.lastgroup, m.end()
        if kind == "braces":
            pos = _skip_braces(expr, pos)
            continue
        if kind == "paren" and skip_label_list and m.group() == "(":
            pos = expr.index(")", pos) + 1  # a list of label names
            skip_label_list = False
            continue
        if kind == "other" and m.group() in "\"'`":
            raise ValueError(f"unterminated string at {m.start()} in {expr!r}")
        if kind != "ident":
            continue
        word = m.group()
        following = expr[pos:].lstrip()
        if word in PROMQL_LABEL_LISTS:
            skip_label_list = True
        elif not _is_language(word, following):
            names.add(word)
    return names


def _is_language(word: str, following: str) -> bool:
    """Whether an identifier is PromQL's own (a function or aggregation called, a keyword)."""
    called = following.startswith("(")
    if word in PROMQL_AGGREGATIONS and (called or following.startswith(("by", "without"))):
        return True
    return (word in PROMQL_FUNCTIONS and called) or word.lower() in PROMQL_KEYWORDS


def histogram_base(name: str) -> str:
    """``x_bucket`` / ``x_sum`` / ``x_count`` -> ``x``; any other name as it is."""
    for suffix in HISTOGRAM_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def dashboard_exprs(path: Path) -> list[tuple[str, str]]:
    """(panel title, expr) of every target of every panel, rows' panels included."""
    doc = json.loads(path.read_text())
    out: list[tuple[str, str]] = []

    def walk(panels: list[dict]) -> None:
        for panel in panels:
            for target in panel.get("targets", []):
                if target.get("expr"):
                    out.append((panel.get("title", ""), target["expr"]))
            walk(panel.get("panels", []))

    walk(doc.get("panels", []))
    return out
