"""Generate ``docs/features.md`` from the declarations: ``python -m features.docs [--check]``.

``--check`` exits 1 when the file on disk differs from what the declarations give (the test suite runs
the same comparison).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from features.declarations import FEATURES

DOC = Path(__file__).resolve().parent.parent / "docs" / "features.md"

HEADER = """# Features

Generated from `features/declarations.py` by `python -m features.docs`; do not edit by hand (a test fails
when this file is stale).

Every feature describes a candidate — a (user, message, channel, send time) — for a decision taken at time
`as_of`, and uses only events strictly before `as_of`: the training set (one row per logged send,
`as_of` = the send's time) and online candidates (`as_of` = now) are computed by the same code
(`features/compute.py`). Rates are smoothed toward population rates with `features.prior_strength`
pseudo-sends (empirical Bayes), so a user with two sends is not "100 %"; population rates are counted over
the days before the day of `as_of`, from all users. Categorical features are integer codes (lifecycle stage:
new 0, active 1, at_risk 2, dormant 3; activity state: power 0, core 1, casual 2, low 3; topic and channel:
codes of the catalog's topics and of the configured channels). A missing value means "never happened".

Besides the features below, every extra column of the `users` table becomes a feature `attr_<column>`
(entity user, profile): numeric columns as numbers, text columns as pandas categoricals.

| feature | entity | window | type | definition |
| --- | --- | --- | --- | --- |
"""


def render() -> str:
    rows = [f"| `{f.name}` | {f.entity} | {f.window} | {f.kind} | {f.description} |" for f in FEATURES]
    return HEADER + "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when docs/features.md is stale")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = DOC.read_text(encoding="utf-8") if DOC.exists() else ""
        if current != text:
            print(f"{DOC} is stale: run `python -m features.docs`", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(text, encoding="utf-8")
    print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
