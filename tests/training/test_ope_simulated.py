"""Off-policy estimates against the simulated world's ground truth (issue 7)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.training.worlds import evaluate_on_simulated_world


@pytest.mark.slow
def test_off_policy_estimates_of_the_uniform_policy_against_the_true_value(tmp_path) -> None:
    """The rules-based log (ε = 0.1 uniform exploration) of 8,000 users × 42 days, the uniform policy as the
    target, valued on the test week's logged decisions whose outcomes are all in the log (~39,000; the
    last ~16,000, whose conversions could still come after the log's end, are held back) against the value
    the world's ground truth gives the same decisions.

    Measured (this seed): truth 0.2019 per decision; IPS 7.3 %, SNIPS 5.7 %, DR 4.3 % off, effective
    sample size 4,243. Before the censoring cut the same estimators were 17–18 % low (IPS, SNIPS): the
    last day's conversions were missing from the log but not from the truth. This is one draw: over seeds
    21–25 (this setup, one seed at a time) the IPS errors were +7.3, −1.3, +4.6, −14.6, −9.6 %
    (DR +4.3 … −15.5 %) — revenue is rare and heavy-tailed, so at this log size the sampling error alone
    is ~9 % (SNIPS's 95 % interval ±40 %);
    ``benchmarks/ope_accuracy.py`` measures the bar on 50,000 users × 60 days (docs/benchmarks.md).

    nbm's quiet hours are off here (``evaluate_on_simulated_world``): the world's log sends at 21:00, and
    with nbm's default (21, 8) 7.0 % of the uniform policy's mass moves to 08:00 sends the log never made;
    then (truth 0.2187) IPS was 13.5 %, SNIPS 18.7 %, DR 10.5 % off — positivity, not the estimators.
    """
    _, report = evaluate_on_simulated_world(tmp_path, n_users=8000, n_days=42, seed=21)
    uniform = report.values["uniform"]
    truth = uniform.true_value
    errors = {name: abs(value - truth) / truth for name, value in
              (("ips", uniform.ips), ("snips", uniform.snips), ("dr", uniform.dr))}
    assert np.isfinite(truth) and truth > 0 and uniform.ess > 2000
    assert report.logged.censored > 0 and 24 <= report.logged.horizon_hours <= 7 * 24
    assert uniform.snips_low <= truth <= uniform.snips_high, (truth, uniform.snips_low, uniform.snips_high)
    assert max(errors.values()) <= 0.10, (truth, errors)


def _reference_uniform_truth(ctx, rows, quiet_hours) -> float:
    """Row by row: each slot's send time walked hour by hour out of the quiet hours, a user's equal send
    times once, a (message, channel) of the user's stage, the message's channels and the user's consent
    at a time only while the message is live then."""
    env, cat = ctx.environment, ctx.catalog
    start, end = quiet_hours
    total = 0.0
    for row in rows:
        pairs = [(m, c) for m in range(len(cat.start_at)) for c in range(ctx.consent.shape[1])
                 if cat.stages[m, ctx.stage[row]] and cat.channels[m, c] and ctx.consent[row, c]]
        user = ctx.users[row]
        times = set()
        for slot, hour in enumerate(ctx.slot_hours):
            at = int(env.send_time(np.array([user]), slot)[0])
            while (hour >= start or hour < end) if start > end else (start <= hour < end):
                hour, at = (hour + 1) % 24, at + 3_600 * 10**9
            times.add(at)
        actions = [(m, c, at) for m, c in pairs for at in sorted(times)
                   if cat.start_at[m] <= at < cat.end_at[m]]
        if actions:
            m, c, at = (np.array(x, dtype=np.int64) for x in zip(*actions))
            total += float(env.respond(np.full(len(m), user), m, c, at).expected_revenue.mean())
    return total


def test_the_uniform_truth_follows_nbms_slots_out_of_quiet_hours() -> None:
    """``_uniform_truth`` with quiet hours against a row-by-row reference, on days whose catalog has
    messages ending or starting the next morning (a 21:00 slot moved to 08:00 is past the first, in the
    second) and users whose moved 21:00 lands on their 08:00 slot (merged); without quiet hours it is the
    mean over every slot."""
    from nbm.simulate import SimConfig
    from nbm.simulate.generate import environment_for, logging_policy
    from training.simulated import _uniform_truth

    config = SimConfig(n_users=600, n_days=21, seed=4)
    env, policy = environment_for(config), logging_policy(config)
    seen = {"days": 0, "ending": 0, "starting": 0, "merged": 0}

    def observe(ctx) -> None:
        rows = np.arange(min(ctx.k, 80))
        quiet = _uniform_truth(ctx, rows, (21, 8))
        assert quiet == pytest.approx(_reference_uniform_truth(ctx, rows, (21, 8)), rel=1e-12)
        assert _uniform_truth(ctx, rows, (3, 3)) == pytest.approx(_uniform_truth(ctx, rows), rel=1e-12)
        plain = _reference_uniform_truth(ctx, rows, (0, 0))
        assert _uniform_truth(ctx, rows) == pytest.approx(plain, rel=1e-12)
        assert quiet != pytest.approx(plain, rel=1e-6)
        seen["days"] += 1
        day = 86_400 * 10**9
        seen["ending"] += int((ctx.live & (ctx.catalog.end_at < ctx.now + 2 * day)).any())
        seen["starting"] += int((ctx.catalog.start_at == ctx.now + day).any())
        sends = np.stack([ctx.environment.send_time(ctx.users[rows], s) for s in range(len(ctx.slot_hours))], 1)
        nine_pm, eight_am = ctx.slot_hours.index(21), ctx.slot_hours.index(8)
        seen["merged"] += int((sends[:, nine_pm] + 11 * 3_600 * 10**9 == sends[:, eight_am]).sum())

    for _ in range(config.n_days):
        env.step(policy, observer=observe)
    assert seen["days"] == config.n_days and seen["ending"] >= 2 and seen["starting"] >= 2 and seen["merged"] > 0, seen
