"""The decision path: candidates, contact verdicts, two-stage scoring, arms, send histories, answers, and
:func:`decision.decide.decide_many` — the one function the service, ``nbm recommend``, off-policy
replay and the simulated A/B loop call, so that what is evaluated offline is what runs online.

Modules, in import order (each imports only those above it):

* ``candidates`` — send slots out of quiet hours, and one user's candidates (the reference form);
* ``pairs`` — the candidates of many decisions as (decision, message, channel) pairs with a slot mask
  (:class:`~decision.pairs.Pairs`), or one row per candidate (:class:`~decision.pairs.CandidateRows`);
* ``histories`` — each decision's past sends (:class:`~decision.histories.SendIndex`);
* ``contact`` — the contact policy's verdict on every (pair, slot);
* ``scoring`` — two-stage scoring and the model's decisions;
* ``arms`` — the experiment arms: the model and the priority baselines (rules, random);
* ``answer`` — the answer record and its items and suppressed entries;
* ``decide`` — ``decide_many()``.
"""
