"""The registered ranker as an ``mlflow.pyfunc`` model: nbm's calibrated score from a DataFrame.

MLflow's *models from code*: :func:`training.tracking.log_training` hands this file to
``mlflow.pyfunc.log_model``, which copies it into the model and runs it whenever the model is loaded
(``mlflow.pyfunc.load_model("models:/nbm-ranker@champion")``); nothing in nbm imports it, and the model
pickles no Python object. Loading it needs the ``nbm`` package installed beside MLflow (``nbm.artifact``
scores; docs/retraining.md, "The registered model").

``predict`` takes a DataFrame with the model's feature columns by name (any order, extra columns ignored),
as nbm's feature pipeline makes them (user attributes as their labels, e.g. ``attr_country`` = ``"DE"``;
the signature gives every column's type) — a funnel model also each row's ``message_id``, and optionally its
``topic`` name (for messages the model has not learned) — and returns the calibrated probability of the
model's target that the service decides with (:meth:`nbm.artifact.ScoringArtifact.score`), not the
booster's raw score.
"""

import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.models import set_model

from nbm.artifact import ScoringArtifact

ARTIFACT_KEY = "nbm_artifact"
"""The model's artifact (a directory saved by ``ScoringArtifact.save``) in ``context.artifacts``."""


class NbmRanker(mlflow.pyfunc.PythonModel):
    """The scoring artifact behind pyfunc's ``predict``; loaded once, in :meth:`load_context`."""

    def load_context(self, context) -> None:
        self.artifact = ScoringArtifact.load(context.artifacts[ARTIFACT_KEY])

    def predict(self, context, model_input: pd.DataFrame, params=None) -> np.ndarray:
        """Calibrated probabilities of the artifact's ``target``, shape ``(len(model_input),)``."""
        if self.artifact.followup is None:
            return self.artifact.score(model_input)
        if "message_id" not in model_input.columns:
            raise ValueError("a funnel model scores with each row's message: the input needs a `message_id` column")
        # A message its table does not know takes its topic's rate: the optional `topic` column's name, else the
        # topic it was trained with (the service passes the live catalog's topics: decision.scoring).
        topic = model_input["topic"].astype(object).to_numpy() if "topic" in model_input.columns else None
        return self.artifact.score(model_input, model_input["message_id"].astype(object).to_numpy(), topic)


set_model(NbmRanker())
