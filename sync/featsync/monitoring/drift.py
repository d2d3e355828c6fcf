"""featsync drift: how a feature view's offline table moved between two event-time windows.

The warehouse does what it does best: row and null counts, and the category counts of
text/boolean features, are GROUP BY queries over each window. Numeric features need
their values for the Kolmogorov-Smirnov test, so only those columns of the two windows
come out, as Arrow (memory: 8 bytes per numeric value and window). Statistics are
scipy's (ks_2samp, chi2_contingency) and numpy's, never hand-rolled tests.

Windows are half-open event-time ranges [start, end), in UTC: a bound without a time
zone is rejected rather than guessed.
"""

from __future__ import annotations

import html
import math
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from featsync.errors import FeatsyncError, UsageError
from featsync.extras import needs
from featsync.offline.sql import identifier
from featsync.offline.warehouse import Warehouse, connect, reading
from featsync.online.layout import epoch_micros
from featsync.progress import Progress, silent
from featsync.project import Project
from featsync.registry import FeatureView, Monitoring
from featsync.registry.types import BOOL, DECIMAL, FLOAT, INT, TEXT, TIMESTAMP
from featsync.results import about, save_result
from featsync.times import parse_time

PSI_BINS = 10  # reference deciles, the usual PSI binning
PSI_FLOOR = 1e-4  # an empty bin's share, so that ln(c / r) stays finite
HISTOGRAM_BINS = 20
HISTOGRAM_CATEGORIES = 15
WINDOWS = ("reference", "current")


@dataclass(frozen=True)
class Window:
    """A half-open event-time range [start, end), both ends aware UTC datetimes."""

    start: datetime
    end: datetime

    @classmethod
    def parse(cls, text: str, option: str = "window") -> Window:
        """'START..END' in ISO 8601 with a zone (2024-03-01T00:00:00Z or +00:00)."""
        start_text, sep, end_text = text.partition("..")
        if not sep or not start_text.strip() or not end_text.strip():
            raise UsageError(f"{option} '{text}' is not START..END (e.g. 2024-03-01T00:00:00Z..2024-04-01T00:00:00Z)")
        bounds = []
        for part in (start_text.strip(), end_text.strip()):
            try:  # the one rule for a time given as text (featsync.times, docs/time-and-types.md)
                bounds.append(parse_time(part, f"{option} '{text}'"))
            except FeatsyncError as exc:
                raise UsageError(str(exc)) from None
        if bounds[0] >= bounds[1]:
            raise UsageError(f"{option} '{text}': the start must be before the end")
        return cls(bounds[0], bounds[1])

    def sql(self, column: str, warehouse: Warehouse, params: list[Any], zoned: bool = False) -> str:
        """The predicate on a timestamp column, naive (UTC) or zoned, with bound instants
        (Warehouse.time_column/time_bound: no session time zone decides)."""
        name, zoned = warehouse.time_column(identifier(column), zoned)
        start, end = (warehouse.time_bound(b, params, zoned) for b in (self.start, self.end))
        return f"{name} >= {start} and {name} < {end}"

    def __str__(self) -> str:
        return f"{_iso(self.start)}..{_iso(self.end)}"


@dataclass
class FeatureDrift:
    """One feature's comparison; the statistics that do not apply to its kind are None."""

    feature: str
    kind: str  # numeric | categorical
    reference_rows: int
    current_rows: int
    null_rate_reference: float
    null_rate_current: float
    ks_statistic: float | None = None
    ks_pvalue: float | None = None
    psi: float | None = None
    chi2: float | None = None
    chi2_pvalue: float | None = None
    share_change: float | None = None  # the largest absolute change of one category's share
    share_change_category: str | None = None
    breaches: list[str] = field(default_factory=list)
    severity: float = 0.0  # the largest metric / threshold ratio: the ranking key
    histogram: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def null_rate_change(self) -> float:
        return abs(self.null_rate_current - self.null_rate_reference)

    def as_dict(self, histogram: bool = False) -> dict[str, Any]:
        data = asdict(self)
        if not histogram:
            data.pop("histogram")
        data["null_rate_change"] = self.null_rate_change
        return data


@dataclass
class DriftReport:
    feature_view: str
    reference: Window
    current: Window
    reference_rows: int
    current_rows: int
    thresholds: Monitoring
    features: list[FeatureDrift]  # ranked: breaches first, then by severity
    skipped: dict[str, str] = field(default_factory=dict)  # feature -> why it was not compared

    @property
    def breached(self) -> bool:
        return any(f.breaches for f in self.features)

    def as_dict(self, histograms: bool = False) -> dict[str, Any]:
        """JSON-ready; with histograms, everything `from_dict` needs to redraw the HTML report."""
        return {
            "feature_view": self.feature_view,
            "reference": str(self.reference),
            "current": str(self.current),
            "reference_rows": self.reference_rows,
            "current_rows": self.current_rows,
            "breached": self.breached,
            "thresholds": asdict(self.thresholds),
            "features": [f.as_dict(histograms) for f in self.features],
            "skipped": self.skipped,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DriftReport:
        """A report recorded by `as_dict(histograms=True)` (featsync.results), e.g. for the UI."""
        derived = {"null_rate_change"}
        return cls(
            data["feature_view"],
            Window.parse(data["reference"]),
            Window.parse(data["current"]),
            data["reference_rows"],
            data["current_rows"],
            Monitoring(**data["thresholds"]),
            [FeatureDrift(**{k: v for k, v in f.items() if k not in derived}) for f in data["features"]],
            dict(data.get("skipped") or {}),
        )


def drift(project: Project, feature_view: str, reference: Window, current: Window, progress: Progress = silent) -> DriftReport:
    """Compare the view's offline rows in the two windows, feature by feature."""
    with needs("drift", "drift detection"):
        import scipy.stats  # noqa: F401  (its tests; imported here to fail before any query)
    view = project.registry().feature_view(feature_view)
    kinds, skipped = feature_kinds(view)
    with connect(project) as warehouse, reading(view):
        progress("counting rows and nulls", 0, 4)
        counts = _counts(warehouse, view, reference, current, list(kinds))
        for window, name in zip(WINDOWS, (reference, current), strict=True):
            if counts[window]["rows"] == 0:
                raise FeatsyncError(
                    f"the {window} window {name} holds no rows of feature view '{view.name}' "
                    f"(by its event time '{view.timestamp}')"
                )
        progress("counting categories", 1, 4)
        categories = _category_counts(warehouse, view, reference, current, [f for f, k in kinds.items() if k == "categorical"])
        numeric = [f for f, k in kinds.items() if k != "categorical"]
        progress("reading numeric values", 2, 4)
        values = {
            w: _numeric_values(warehouse, view, win, numeric, kinds) for w, win in zip(WINDOWS, (reference, current), strict=True)
        }
    for w in WINDOWS:  # NaN and infinities count with the NULLs: the one rule for non-finite values
        for name, (finite, non_finite) in values[w].items():
            counts[w][name] -= non_finite
            values[w][name] = finite
    progress("testing", 3, 4)
    results = []
    for name, kind in kinds.items():
        rows = (counts["reference"]["rows"], counts["current"]["rows"])
        nulls = tuple(1 - counts[w][name] / counts[w]["rows"] for w in WINDOWS)
        result = FeatureDrift(name, "categorical" if kind == "categorical" else "numeric", *rows, *nulls)
        if kind == "categorical":
            _compare_categories(result, categories.get(name, {}))
        else:
            _compare_numeric(result, values["reference"][name], values["current"][name])
        _judge(result, view.monitoring)
        results.append(result)
    results.sort(key=lambda f: (not f.breaches, -f.severity, f.feature))
    report = DriftReport(
        view.name, reference, current, counts["reference"]["rows"], counts["current"]["rows"], view.monitoring, results, skipped
    )
    save_result(project, "drift", {view.name: report.as_dict(histograms=True)}, abouts={view.name: about(view)})
    return report


_DRIFT_KINDS = {INT: "numeric", FLOAT: "numeric", DECIMAL: "numeric", TIMESTAMP: "timestamp", TEXT: "categorical"}
_DRIFT_KINDS[BOOL] = "categorical"


def feature_kinds(view: FeatureView) -> tuple[dict[str, str], dict[str, str]]:
    """numeric (integers, floats, decimals), timestamp (compared as numbers) or categorical
    (text, boolean), from the one type table; other types are not compared."""
    kinds, skipped = {}, {}
    for column in view.features:
        kind = _DRIFT_KINDS.get(column.type.kind)
        if kind is None:
            skipped[column.name] = f"type '{column.data_type}' is not compared"
        else:
            kinds[column.name] = kind
    return kinds, skipped


# -- warehouse queries --------------------------------------------------------------------


def _counts(warehouse: Warehouse, view: FeatureView, reference: Window, current: Window, features: list[str]) -> dict:
    """Rows and non-null values per feature in each window: one aggregate query."""
    selects, params = [], []
    for w, window in enumerate((reference, current)):
        columns = ", ".join(
            [f"{w} as featsync_window", "count(*) as featsync_rows"]
            + [f"count({identifier(f)}) as n{i}" for i, f in enumerate(features)]
        )
        selects.append(f"select {columns} from {view.relation} where {_in(window, view, warehouse, params)}")
    table = warehouse.fetch_arrow(" union all ".join(selects), params)
    out = {}
    for row in table.to_pylist():
        window, rows = WINDOWS[int(row["featsync_window"])], int(row["featsync_rows"])
        out[window] = {"rows": rows, **{f: int(row[f"n{i}"]) for i, f in enumerate(features)}}
    return out


def _category_counts(
    warehouse: Warehouse, view: FeatureView, reference: Window, current: Window, features: list[str]
) -> dict[str, dict[str, dict[str, int]]]:
    """feature -> category -> {reference: n, current: n}, counted by the warehouse."""
    if not features:
        return {}
    selects, params = [], []
    for i, f in enumerate(features):
        for w, window in enumerate((reference, current)):
            name, text = identifier(f), warehouse.text_type
            selects.append(
                f"select {i} as featsync_feature, {w} as featsync_window, cast({name} as {text}) as featsync_value, "
                f"count(*) as featsync_n from {view.relation} where {_in(window, view, warehouse, params)} "
                f"and {name} is not null group by cast({name} as {text})"
            )
    out: dict[str, dict[str, dict[str, int]]] = {}
    for row in warehouse.fetch_arrow(" union all ".join(selects), params).to_pylist():
        feature, window = features[int(row["featsync_feature"])], WINDOWS[int(row["featsync_window"])]
        shares = out.setdefault(feature, {}).setdefault(row["featsync_value"], dict.fromkeys(WINDOWS, 0))
        shares[window] = int(row["featsync_n"])
    return out


def _numeric_values(
    warehouse: Warehouse, view: FeatureView, window: Window, features: list[str], kinds: dict[str, str]
) -> dict[str, Any]:
    """The finite values of each numeric feature in the window, as float64 arrays, and how many
    non-null values were not finite.

    NULL, NaN and +-inf are left out: one NaN would make KS and every PSI edge NaN (and every
    comparison with them False, i.e. "ok"), an infinity would make the histogram's range
    infinite. drift counts them with the NULLs in the null-rate check instead."""
    if not features:
        return {}
    params: list[Any] = []
    columns = ", ".join(f"{identifier(f)} as n{i}" for i, f in enumerate(features))
    table = warehouse.fetch_arrow(f"select {columns} from {view.relation} where {_in(window, view, warehouse, params)}", params)
    out = {}
    for i, name in enumerate(features):
        column = pc.drop_null(table.column(f"n{i}"))
        if kinds[name] == "timestamp":  # seconds since the epoch, from any precision and zone
            values = epoch_micros(column).astype(np.float64) / 1e6
        else:  # as doubles, rounding big integers and decimals: statistics need no more
            values = pc.cast(column, pa.float64(), safe=False).to_numpy(zero_copy_only=False).astype(np.float64)
        finite = np.isfinite(values)
        out[name] = (values[finite], int(len(values) - finite.sum()))
    return out


# -- statistics ---------------------------------------------------------------------------


def _compare_numeric(result: FeatureDrift, reference: np.ndarray, current: np.ndarray) -> None:
    from scipy.stats import ks_2samp

    if len(reference) and len(current):
        test = ks_2samp(reference, current)
        result.ks_statistic, result.ks_pvalue = float(test.statistic), float(test.pvalue)
        result.psi = psi(reference, current)
    result.histogram = numeric_histogram(reference, current)


def psi(reference: np.ndarray, current: np.ndarray, bins: int = PSI_BINS) -> float:
    """Population stability index over the reference's quantile bins.

    Bins are the reference deciles (fewer when values repeat: np.unique collapses equal
    edges, so a count feature with three distinct values gets at most three bins);
    values equal to an edge fall right on both sides. An empty bin counts PSI_FLOOR.
    """
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1]))
    shares = [
        np.clip(np.bincount(np.searchsorted(edges, x, side="right"), minlength=len(edges) + 1) / len(x), PSI_FLOOR, None)
        for x in (reference, current)
    ]
    return float(np.sum((shares[1] - shares[0]) * np.log(shares[1] / shares[0])))


def _compare_categories(result: FeatureDrift, counts: dict[str, dict[str, int]]) -> None:
    from scipy.stats import chi2_contingency

    categories = sorted(counts)
    table = np.array([[counts[c][w] for c in categories] for w in WINDOWS], dtype=np.float64)
    totals = table.sum(axis=1)
    if not (totals > 0).all():
        return  # all NULL in a window: only the null-rate change says anything
    shares = table / totals[:, None]
    change = np.abs(shares[1] - shares[0])
    worst = int(np.argmax(change))
    result.share_change, result.share_change_category = float(change[worst]), categories[worst]
    if len(categories) > 1:
        test = chi2_contingency(table)
        result.chi2, result.chi2_pvalue = float(test.statistic), float(test.pvalue)
    else:
        result.chi2, result.chi2_pvalue = 0.0, 1.0
    top = sorted(range(len(categories)), key=lambda i: -max(shares[0][i], shares[1][i]))[:HISTOGRAM_CATEGORIES]
    result.histogram = {
        "labels": [categories[i] for i in top],
        "reference": [float(shares[0][i]) for i in top],
        "current": [float(shares[1][i]) for i in top],
    }


def _judge(result: FeatureDrift, limits: Monitoring) -> None:
    """Mark breaches and the severity: how far the worst metric is past its threshold.

    A statistic that is not a number (NaN compares False with every threshold) is a breach
    of its own, never a pass."""
    for name in ("ks_statistic", "ks_pvalue", "psi", "chi2_pvalue"):
        value = getattr(result, name)
        if value is not None and math.isnan(value):
            result.breaches.append(f"{name} is not a number: the comparison cannot pass")
    ratios = [_ratio(result.null_rate_change, limits.null_rate_change)]
    if result.null_rate_change > limits.null_rate_change:
        result.breaches.append(f"null rate moved {result.null_rate_change:.1%} > {limits.null_rate_change:.1%}")
    if result.psi is not None:
        ratios.append(_ratio(result.psi, limits.psi))
        if result.psi > limits.psi:
            result.breaches.append(f"PSI {result.psi:.3f} > {limits.psi:g}")
    if result.ks_statistic is not None:
        ratios.append(_ratio(result.ks_statistic, limits.ks_statistic))
        if result.ks_pvalue < limits.ks_pvalue and result.ks_statistic > limits.ks_statistic:
            result.breaches.append(f"KS {result.ks_statistic:.3f} > {limits.ks_statistic:g} (p={result.ks_pvalue:.2g})")
    if result.share_change is not None:
        ratios.append(_ratio(result.share_change, limits.share_change))
        if result.chi2_pvalue < limits.chi2_pvalue and result.share_change > limits.share_change:
            result.breaches.append(
                f"share of '{result.share_change_category}' moved {result.share_change:.1%} > {limits.share_change:.0%} "
                f"(chi-square p={result.chi2_pvalue:.2g})"
            )
    result.severity = max(ratios)


def _ratio(value: float, limit: float) -> float:
    if math.isnan(value):
        return math.inf  # a statistic that is not a number ranks with the worst
    if limit > 0:
        return value / limit
    return math.inf if value > 0 else 0.0


def numeric_histogram(reference: np.ndarray, current: np.ndarray, bins: int = HISTOGRAM_BINS) -> dict[str, Any]:
    """Shares per equal-width bin over both windows' pooled range."""
    pooled = np.concatenate([reference, current])
    if not len(pooled):
        return {}
    low, high = float(pooled.min()), float(pooled.max())
    edges = np.linspace(low, high if high > low else low + 1, bins + 1)
    shares = [(np.histogram(x, edges)[0] / len(x)).tolist() if len(x) else [0.0] * bins for x in (reference, current)]
    return {"edges": edges.tolist(), "reference": shares[0], "current": shares[1]}


# -- the HTML report -----------------------------------------------------------------------

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;font-size:13px;text-align:right}
td:first-child,th:first-child{text-align:left}.breach{background:#fde2e1}.cards{display:flex;flex-wrap:wrap;gap:16px}
.card{border:1px solid #ddd;padding:8px;border-radius:4px}.card h3{margin:0 0 4px;font-size:14px}
.legend span{display:inline-block;width:10px;height:10px;margin:0 4px 0 12px}
"""
_COLOURS = {"reference": "#4C78A8", "current": "#F58518"}


def html_report(report: DriftReport) -> str:
    """One self-contained HTML page: the ranked table and a histogram per feature (inline SVG)."""
    e = html.escape
    rows = []
    for f in report.features:
        cells = [
            f.feature,
            f.kind,
            f"{f.null_rate_reference:.1%} → {f.null_rate_current:.1%}",
            fmt_number(f.ks_statistic),
            fmt_number(f.ks_pvalue, "{:.2g}"),
            fmt_number(f.psi),
            fmt_number(f.chi2_pvalue, "{:.2g}"),
            "-" if f.share_change is None else f"{f.share_change:.1%} ({f.share_change_category})",
            "; ".join(f.breaches) or "ok",
        ]
        rows.append(f"<tr class='{'breach' if f.breaches else ''}'>" + "".join(f"<td>{e(c)}</td>" for c in cells) + "</tr>")
    header = "".join(
        f"<th>{h}</th>" for h in ("feature", "kind", "null rate", "KS", "KS p", "PSI", "chi² p", "max share Δ", "verdict")
    )
    cards = "".join(
        f"<div class='card'><h3>{e(f.feature)}{' ⚠' if f.breaches else ''}</h3>{_svg(f)}</div>" for f in report.features
    )
    legend = "".join(f"<span style='background:{c}'></span>{w}" for w, c in _COLOURS.items())
    verdict = "drift beyond the thresholds" if report.breached else "no feature beyond the thresholds"
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>featsync drift: {e(report.feature_view)}</title><style>{_STYLE}</style></head>
<body><h1>Drift of {e(report.feature_view)}</h1>
<p>reference {e(str(report.reference))} ({report.reference_rows:,} rows) against current {e(str(report.current))}
({report.current_rows:,} rows), event time, UTC: <b>{verdict}</b>.</p>
<table><tr>{header}</tr>{"".join(rows)}</table>
<p class="legend">Shares per bin:{legend}</p><div class="cards">{cards}</div></body></html>
"""


def _svg(f: FeatureDrift, width: int = 360, height: int = 170) -> str:
    """Reference and current shares side by side per bin or category."""
    hist = f.histogram
    if not hist:
        return "<p>no values to plot</p>"
    numbers = [*hist.get("edges", ()), *hist["reference"], *hist["current"]]
    if not all(isinstance(x, int | float) and math.isfinite(x) for x in numbers):
        # a result recorded before non-finite values were left out: its NaN edges read back as null
        return "<p>no histogram: its recorded bins are not numbers (values that were not finite)</p>"
    labels = hist.get("labels") or [f"{x:.4g}" for x in hist["edges"][:-1]]
    n = len(labels)
    top = max(max(hist["reference"]), max(hist["current"])) or 1.0
    plot_h, base, left = height - 40, height - 30, 30
    slot = (width - left - 10) / n
    bars = []
    for i in range(n):
        for j, window in enumerate(WINDOWS):
            share = hist[window][i]
            h = plot_h * share / top
            x = left + i * slot + j * slot / 2
            bars.append(
                f"<rect x='{x:.1f}' y='{base - h:.1f}' width='{max(slot / 2 - 1, 0.5):.1f}' height='{h:.1f}' "
                f"fill='{_COLOURS[window]}'><title>{html.escape(labels[i])}: {window} {share:.1%}</title></rect>"
            )
    if "labels" in hist:
        ticks = "".join(
            f"<text x='{left + (i + 0.5) * slot:.1f}' y='{base + 12}' font-size='9' text-anchor='middle'>"
            f"{html.escape(labels[i][:8])}</text>"
            for i in range(n)
        )
    else:
        ticks = (
            f"<text x='{left}' y='{base + 12}' font-size='9'>{hist['edges'][0]:.4g}</text>"
            f"<text x='{width - 10}' y='{base + 12}' font-size='9' text-anchor='end'>{hist['edges'][-1]:.4g}</text>"
        )
    axis = (
        f"<line x1='{left}' y1='{base}' x2='{width - 10}' y2='{base}' stroke='#888'/>"
        f"<text x='{left - 4}' y='{base - plot_h + 8}' font-size='9' text-anchor='end'>{top:.0%}</text>"
    )
    return f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}'>{axis}{''.join(bars)}{ticks}</svg>"


def fmt_number(value: float | None, pattern: str = "{:.3f}") -> str:
    return "-" if value is None else pattern.format(value)


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _in(window: Window, view: FeatureView, warehouse: Warehouse, params: list[Any]) -> str:
    """The window's predicate on the view's event time, naive (UTC) or zoned."""
    return window.sql(view.timestamp, warehouse, params, view.column(view.timestamp).type.zoned)
