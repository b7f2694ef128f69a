"""Point-in-time features of (user, message, channel, send time) candidates, declared once.

``declarations`` lists every feature; ``pipeline.FeatureStore`` indexes a dataset's history and builds
the training set, the online snapshot and candidate features through one function
(``compute.featurise``); ``candidates.expand`` lists the eligible actions of a decision. See
``docs/features.md``.
"""
