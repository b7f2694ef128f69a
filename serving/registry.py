"""Loading the scoring artifact for serving: by MLflow registry URI, or from a directory.

``models:/nbm-ranker@champion`` (the default) resolves the alias in the configured MLflow store and
downloads the version's scoring artifact (booster + calibrator + features; see ``nbm.artifact``). A plain
path loads an artifact directory saved by ``ScoringArtifact.save``. :func:`resolve_version` tells which
version an alias points at now, cheaply, so a running service can notice that the alias moved.

A loaded artifact scores through its booster compiled to machine code (``nbm.compiled``; the object code
is cached under ``NBM_HOME/compiled``), or — when that is not possible here, said once on the log — through
``Booster.predict``.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from nbm import compiled
from nbm.artifact import ScoringArtifact
from nbm.config import NbmConfig
from nbm.errors import UnusableInputError

DEFAULT_MODEL = "models:/nbm-ranker@champion"
_LOG = logging.getLogger("nbm.serving")
_URI = re.compile(r"^models:/(?P<name>[^@/]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")


@dataclass(frozen=True)
class LoadedModel:
    artifact: ScoringArtifact
    version: str      # registry version, or the directory's name
    held_out_uri: str | None = None    # the fit its training run judged, when it was refitted on the whole log

    def held_out(self) -> ScoringArtifact | None:
        """The fit the model's training run judged on its held-out windows (``None``: it is that fit)."""
        if self.held_out_uri is None:
            return None
        import mlflow

        return ScoringArtifact.load(mlflow.artifacts.download_artifacts(self.held_out_uri))


def _client(config: NbmConfig):
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(config.mlflow_tracking_uri)
    return MlflowClient()


def resolve_version(uri: str, config: NbmConfig) -> str | None:
    """The registry version behind ``uri`` now (``None`` for a directory, or an alias that does not exist)."""
    match = _URI.match(uri)
    if match is None:
        return None
    from mlflow.exceptions import MlflowException

    client = _client(config)
    try:
        if match["alias"]:
            return str(client.get_model_version_by_alias(match["name"], match["alias"]).version)
        return str(client.get_model_version(match["name"], match["version"]).version)
    except MlflowException:
        return None


def load_model(uri: str, config: NbmConfig) -> LoadedModel:
    """The scoring artifact at ``uri`` (a ``models:/`` URI or an artifact directory)."""
    match = _URI.match(uri)
    if match is None:
        path = Path(uri)
        if not path.is_dir():
            raise UnusableInputError(f"`--model`: {uri!r} is neither a models:/NAME@ALIAS URI nor a directory")
        return LoadedModel(_compiled(ScoringArtifact.load(path), config), path.name)
    import mlflow
    from mlflow.exceptions import MlflowException

    client = _client(config)
    try:
        version = (client.get_model_version_by_alias(match["name"], match["alias"]) if match["alias"]
                   else client.get_model_version(match["name"], match["version"]))
    except MlflowException as exc:
        raise UnusableInputError(f"no registered model at {uri} in {config.mlflow_tracking_uri} "
                                 "(train one with `nbm train`)") from exc
    location = version.tags.get("nbm_artifact") or f"runs:/{version.run_id}/nbm_artifact"
    artifact = ScoringArtifact.load(mlflow.artifacts.download_artifacts(location))
    return LoadedModel(_compiled(artifact, config), str(version.version), version.tags.get("nbm_artifact_held_out"))


def _compiled(artifact: ScoringArtifact, config: NbmConfig) -> ScoringArtifact:
    fast = artifact.compile(config.home.expanduser() / "compiled")
    if fast.compiled is None:
        _LOG.warning("scoring with Booster.predict: %s", "; ".join(compiled.LAST_FAILURE))
    return fast
