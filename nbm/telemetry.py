"""nbm never calls out: the usage statistics of the libraries it runs on are switched off.

BentoML looks up its usage host at every ``serve`` and posts usage statistics every 12 hours unless
``BENTOML_DO_NOT_TRACK`` is true; MLflow 3 sends telemetry unless ``MLFLOW_DISABLE_TELEMETRY`` (or
``DO_NOT_TRACK``) is set. :func:`switch_off` sets them — over any value already there: a brand's customer
data and its usage patterns do not leave the machine — for the ``nbm`` command, every subprocess it starts
(the service's workers inherit the environment) and a service started by ``bentoml serve`` directly.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

OFF = {"BENTOML_DO_NOT_TRACK": "True", "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
"""The variables, and the values that switch each library's telemetry off."""


def switch_off(environ: MutableMapping[str, str] | None = None) -> MutableMapping[str, str]:
    """Set :data:`OFF` in ``environ`` (default: this process's environment); returns it."""
    environ = os.environ if environ is None else environ
    environ.update(OFF)
    return environ
