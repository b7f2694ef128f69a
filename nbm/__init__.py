"""nbm — next-best-message engine.

The core package: the data contract and its validation, loading, identity resolution, configuration,
the simulated world, and (later) the decision policy and off-policy estimators. See DESIGN.md.
"""

__version__ = "0.1.0"
