"""nbm — next-best-message engine.

The core package: the data contract and its validation, loading, identity resolution, configuration,
the simulated world, and (later) the decision policy and off-policy estimators. See DESIGN.md.
"""

from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("nbm")      # pyproject.toml's, once installed
except _metadata.PackageNotFoundError:          # the source alone (a Bento's src/, say)
    __version__ = "0+unknown"
