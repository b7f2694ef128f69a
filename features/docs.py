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
(`features/compute.py`). Rates are smoothed toward a parent's rate (the population's, or the user's segment's)
with a strength in pseudo-sends learned from the log by empirical Bayes (see [Smoothing](#smoothing) below), so
a user with two sends is not "100 %"; population and segment rates are counted over the days before the day of
`as_of`, from all users. Categorical features are integer codes (lifecycle stage:
new 0, active 1, at_risk 2, dormant 3; activity state: power 0, core 1, casual 2, low 3; topic and channel:
codes of the catalog's topics and of the configured channels). A missing value means "never happened".

Besides the features below, every extra column of the `users` table becomes a feature `attr_<column>`
(entity user, profile): numeric columns as numbers, text columns as pandas categoricals. A text column whose
values name the catalog's topics (at least two of them, and at least half of its distinct values, compared
without case: a stated favourite category) also gives the candidate a feature `attr_<column>_is_topic` (entity
user×topic): 1 where the person's value names the message's topic, 0 where it names another, missing where the
person has none. As two categoricals the model would need a split for every pair of value and topic to learn
"the stated favourite"; this way it takes one.

| feature | entity | window | type | definition |
| --- | --- | --- | --- | --- |
"""


SMOOTHING = """
## Smoothing

Every rate above is (k + s·μ) / (n + s): the cell's own k successes in n sends (a user × channel pair's opens,
say), shrunk toward its parent's rate μ with a strength of s pseudo-sends. The cells of one kind form a
*family*, and each family has its own strength (`features/priors.py`):

| family | cells | parent |
| --- | --- | --- |
| `user_channel_opens`, `user_channel_clicks` | user × channel, 90 days | the channel's rate in the user's segment (without segments: the channel's population rate) |
| `user_topic_opens`, `user_topic_clicks` | user × topic, 90 days | the topic's rate in the user's segment (without segments: the topic's population rate); for the lifts (`ut_*_lift`), the user's own rate over every topic, with the same strength |
| `user_tag_clicks` | user × tag, 90 days | the tag's population rate |
| `user_opens` | user, 90 days | the overall open rate |
| `user_hour_opens` | user × local send hour, 90 days | the user's own open rate (`user_opens`) |
| `user_hour_visits`, `user_weekday_visits` | user × local hour (weekday) of visits, 90 days | 1/24 (1/7) |
| `message_opens`, `message_clicks`, `message_converts` | message, all history | its topic's rate (itself toward the overall rate) |
| `segment_channel_opens`, … `segment_topic_clicks` | segment × channel (topic), all history | the population's rate of the channel (topic) |
| `population` | channel, topic, tag; the overall rate | the overall rate; fixed priors (opens 0.1, clicks 0.02, conversions 0.005) |

**`[features] prior_strength`** — `"auto"` (the default) learns each family's strength from the log given to
the build: the strength that maximises the beta-binomial marginal likelihood of the family's cells, as the
features count them at the end of the log, each with its own parent (`features/strength.py`; cells with fewer
than two sends are left out, and at most 20,000 users' cells are used, chosen by a hash of the user id). A
strength is clipped to 1–1,000 pseudo-sends; a family with fewer than 20 informative cells keeps 10, and so does
`population` (a handful of cells of thousands of sends each: it matters only in a log's first days). A number
sets every family (the smoothing before "auto"); a table sets the families it names and learns the others,
e.g. to pin what a training run learned:

```toml
[features]
prior_strength = { user_topic_clicks = 5.3, user_channel_clicks = 16.9 }
```

The strengths are learned once, when the feature store or the training set is built
(`features.pipeline.Globals.build`), never per request: the training set and the online store of the same data
use the same numbers. `FeatureStore.prior_strengths()` (or `Globals.strengths`) returns them, `.as_dict()` for
a log and `.learned` for the families learned from the data. They are hyperparameters of the training log: a
training row's features count only events before its send, but the strengths are learned on the whole log,
later outcomes included — one number per family, the leak of any hyperparameter tuned on the training log.
`nbm train` logs them (`prior_strength_FAMILY`) and the model carries them (`artifact.prior_strengths`): the
service, `nbm recommend` and `nbm simulate --ab` featurise with the strengths the model was trained with
(`FeatureStore.build(..., strengths=...)`), not with strengths learned again on their own snapshot.

**`[features] segment_by`** — user attribute columns of the `users` table (default: none). Each combination
of their values (a missing value is a value of its own) is a segment; user × channel and user × topic rates
shrink toward the segment's rate, itself shrunk toward the population's (the `segment_*` strengths). A user
with no history then gets the rate of their segment, and a user without a `users` row (or a segment without
history) the population's. Text columns or numbers with a few values suit; each distinct value is a level. The
lifecycle stage cannot be a segment column: it changes with time (a send's segment would be the stage at its
time), and a user without history, whom the segment prior is for, is `new` or `dormant` by definition; the
ranker has the stage as a feature to combine with the rates.
"""


def render() -> str:
    rows = [f"| `{f.name}` | {f.entity} | {f.window} | {f.kind} | {f.description} |" for f in FEATURES]
    return HEADER + "\n".join(rows) + "\n" + SMOOTHING


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
