"""The report's plots: inline SVG drawn with matplotlib, byte-for-byte the same for the
same records (no dates, a fixed hash salt, no randomness; text as SVG text).

Every plot shows the *tolerance used*, error / threshold of a numeric check (1 is the
limit: above it the check fails; an exact result is drawn at 1e-6), so checks of
different scales share an axis:

* against the case's sequence length, per family, a colour per variant;
* against the number of calls in the case (prefill, decode steps, extends), per family;
* against the dtype, a colour per family;
* and the distribution of the margins of the passes, per check (1 exact, 0 at the limit).
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd

# what a family's case calls its length and its calls (case_params keys); a family not
# listed here is left out of that plot
_LENGTH = {
    "attention": lambda p: p["len_k"],
    "documents": lambda p: sum(p["documents"]) + p["slack"],
    "microsequences": lambda p: sum(p["documents"]) + p["slack"],
    "gated_delta": lambda p: p["length"],
    "kv_cache": lambda p: sum(p["schedule"]),
}
_CALLS = {
    "kv_cache": lambda p: len(p["schedule"]),
    "gdn_block": lambda p: len(p["schedule"]),
    "cross_cache": lambda p: len(p["schedule"]),
    "programs": lambda p: len(p["calls"]),
}
_WIDTH = 3.6  # inches per panel


def _pyplot():
    import matplotlib

    matplotlib.use("svg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.hashsalt": "attn-oracle", "svg.fonttype": "none", "font.size": 8,
                         "axes.titlesize": 9, "legend.fontsize": 6, "figure.dpi": 72,
                         "axes.titley": 1.02})  # a fixed title height: placing it by its bounding box is slow
    return plt


def _svg(fig) -> str:
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})
    _pyplot().close(fig)
    text = buffer.getvalue()
    return text[text.index("<svg"):]  # inline: no XML prolog or doctype


def _limit_line(ax) -> None:
    """Log y axis with plain tick labels (matplotlib's default ones go through mathtext,
    which costs more than the rest of the plot) and the failing limit at 1."""
    from matplotlib import ticker

    ax.set_yscale("log")
    ax.yaxis.set_major_locator(ticker.LogLocator(numticks=6))
    ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}"))
    ax.yaxis.set_minor_locator(ticker.NullLocator())
    ax.axhline(1.0, color="#c00", linewidth=0.8)
    low = min(line.get_offsets()[:, 1].min() for line in ax.collections)
    ax.set_ylim(min(0.1, low / 2), 2.0)  # at least one decade, so labelled ticks show


def tolerance_used(frame: pd.DataFrame) -> pd.DataFrame:
    """The numeric pass and fail records with a finite ``used`` = error / threshold (exact
    results at 1e-6, so that a log axis can show them)."""
    numeric = frame[frame["status"].isin(["pass", "fail"]) & (frame["threshold"] > 0)]
    used = numeric["error"] / numeric["threshold"]
    keep = np.isfinite(used)
    return numeric[keep].assign(used=used[keep].clip(lower=1e-6))


def _distinct(used: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """One point for the points a reader cannot tell apart: the same ``keys`` and, to 1 %, the same y."""
    return used.assign(level=np.round(np.log10(used["used"]), 2)).drop_duplicates(keys + ["level"])


def _axis_by(records: pd.DataFrame, rule: dict) -> pd.Series:
    values = []
    for family, params in zip(records["family"], records["case_params"]):
        try:
            values.append(float(rule[family](params)) if family in rule else np.nan)
        except (KeyError, TypeError, ValueError):
            values.append(np.nan)
    return pd.Series(values, index=records.index)


def _panels(used: pd.DataFrame, rule: dict, xlabel: str) -> str | None:
    """One panel per family in ``rule``: x from ``rule``, y the tolerance used, a colour per variant."""
    used = used.assign(x=_axis_by(used, rule)).dropna(subset=["x"])
    used = _distinct(used, ["family", "variant", "x"])
    families = [f for f in rule if f in set(used["family"])]
    if not families:
        return None
    plt = _pyplot()
    from matplotlib import ticker

    rows = -(-len(families) // 2)
    fig, axes = plt.subplots(rows, 2, figsize=(2 * (_WIDTH + 2.2), 2.5 * rows + 0.4), squeeze=False)
    for ax, family in zip(axes.flat, families):
        points = used[used["family"] == family]
        for n, (variant, group) in enumerate(points.groupby("variant", sort=True)):
            ax.scatter(group["x"], group["used"], s=6, label=variant, color=f"C{n % 10}",
                       marker="os^vD"[n // 10 % 5], linewidths=0)
        _limit_line(ax)
        ax.set_title(family)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("error / threshold")
        ax.xaxis.set_major_locator(ticker.MaxNLocator(6, integer=True))
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), markerscale=1.5, frameon=False)
    for ax in list(axes.flat)[len(families):]:
        ax.set_visible(False)
    fig.subplots_adjust(left=0.07, right=0.8, top=1 - 0.3 / (2.5 * rows + 0.4), hspace=0.55, wspace=0.9)
    return _svg(fig)


def by_dtype(used: pd.DataFrame) -> str | None:
    if used.empty:
        return None
    plt = _pyplot()
    dtypes = sorted(set(used["dtype"]))
    families = sorted(set(used["family"]))
    fig, ax = plt.subplots(figsize=(_WIDTH * 1.6, 2.8))
    used = _distinct(used, ["family", "dtype"])
    width = 0.8 / len(families)
    for n, family in enumerate(families):
        rows = used[used["family"] == family]
        x = rows["dtype"].map(dtypes.index) - 0.4 + width * (n + 0.5)
        # spread the points of one column by their rank, deterministically
        spread = (rows.groupby("dtype").cumcount() % 7 - 3) * width / 10
        ax.scatter(x + spread, rows["used"], s=4, color=f"C{n % 10}", label=family, linewidths=0)
    _limit_line(ax)
    ax.set_xticks(range(len(dtypes)), dtypes)
    ax.set_ylabel("error / threshold")
    ax.legend(loc="lower right", ncol=2, frameon=False)
    ax.set_title("tolerance used by dtype, a colour per family")
    fig.subplots_adjust(bottom=0.12, top=0.88)
    return _svg(fig)


def margin_distribution(frame: pd.DataFrame) -> str | None:
    """Per check, the margins of its passes as a box (whiskers at the smallest and largest)."""
    passes = frame[(frame["status"] == "pass") & np.isfinite(frame["margin"])]
    groups = [(check, g["margin"].clip(0.0, 1.0).to_numpy()) for check, g in passes.groupby("check", sort=True)]
    if not groups:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(_WIDTH * 1.6, 0.3 * len(groups) + 0.9))
    ax.boxplot([values for _, values in groups], orientation="horizontal", whis=(0, 100), widths=0.6,
               tick_labels=[f"{check} ({len(values)}, min {values.min():.2f})" for check, values in groups])
    ax.invert_yaxis()
    ax.set_xlim(-0.02, 1.02)
    ax.set_xlabel("margin of a pass (0 = at the threshold, 1 = exact)")
    ax.set_title("how close the passes came to their thresholds, per check")
    fig.subplots_adjust(left=0.3, bottom=0.6 / (0.3 * len(groups) + 0.9), top=1 - 0.3 / (0.3 * len(groups) + 0.9))
    return _svg(fig)


def plots(frame: pd.DataFrame) -> dict[str, str]:
    """Title -> inline SVG, for the plots the records can fill."""
    used = tolerance_used(frame)
    drawn = {
        "Tolerance used against sequence length, a colour per variant": _panels(used, _LENGTH, "sequence length (tokens)"),
        "Tolerance used against the calls of the case, a colour per variant": _panels(
            used, _CALLS, "calls in the case (prefill, decode, extend)"),
        "Tolerance used by dtype": by_dtype(used),
        "Distribution of margins": margin_distribution(frame),
    }
    return {title: svg for title, svg in drawn.items() if svg}
