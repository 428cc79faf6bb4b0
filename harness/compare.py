"""What got worse between two runs: new failures, passes whose margin shrank, and what
got better, from two sets of saved records (run folders or results.csv files)."""

from __future__ import annotations

import pandas as pd

KEY = ["family", "variant", "case_id", "check", "target"]
BAD = ("fail", "error")


def compare(old: pd.DataFrame, new: pd.DataFrame, margin_drop: float = 0.1) -> dict[str, pd.DataFrame]:
    """Rows joined on (family, variant, case, check, target):

    * ``new_failures``: fail/error now, not before (pass, unsupported or absent);
    * ``fixed``: fail/error before, pass now;
    * ``shrunk``: a pass in both whose margin fell by more than ``margin_drop``;
    * ``missing``: rows of the old run that the new one no longer has.
    """
    joined = old[KEY + ["status", "margin"]].merge(new[KEY + ["status", "margin", "detail", "reproduce"]], on=KEY,
                                                   how="outer", suffixes=("_old", "_new"), indicator=True)
    now_bad = joined["status_new"].isin(BAD)
    was_bad = joined["status_old"].isin(BAD)
    both_pass = (joined["status_old"] == "pass") & (joined["status_new"] == "pass")
    drop = joined["margin_old"] - joined["margin_new"]
    return {
        "new_failures": joined[now_bad & ~was_bad],
        "fixed": joined[was_bad & (joined["status_new"] == "pass")],
        "shrunk": joined[both_pass & (drop > margin_drop)].assign(margin_drop=drop).sort_values("margin_drop", ascending=False),
        "missing": joined[joined["_merge"] == "left_only"],
    }


def summary(result: dict[str, pd.DataFrame]) -> str:
    lines = []
    for name, frame in result.items():
        lines.append(f"{name.replace('_', ' ')}: {len(frame)}")
        for row in frame.head(20).itertuples():
            margins = f" margin {row.margin_old:.3g} -> {row.margin_new:.3g}" if name == "shrunk" else ""
            status = f" {row.status_old} -> {row.status_new}" if name != "shrunk" else ""
            lines.append(f"  {row.family}/{row.variant} {row.check}:{row.target} {row.case_id}{status}{margins}")
        if len(frame) > 20:
            lines.append(f"  ... and {len(frame) - 20} more")
    return "\n".join(lines)
