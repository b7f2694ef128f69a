"""Point-in-time features of (user, message, channel, send time) candidates, declared once.

``declarations`` lists every feature; ``pipeline.FeatureStore`` indexes a dataset's history and builds
the training set, the online snapshot and candidate features through one function
(``compute.featurise``). Which candidates a decision has, and the decision itself, are the ``decision``
package's (``decision.candidates.expand``, ``decision.decide.decide_many``). See ``docs/features.md``.
"""
