"""A simulated world: its people, its catalog and its ground truth, built from one :class:`SimConfig`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from nbm.simulate.catalog import Catalog, build_catalog
from nbm.simulate.config import SimConfig
from nbm.simulate.population import Population, build_population
from nbm.simulate.truth import GroundTruth


@dataclass(frozen=True)
class World:
    """Everything fixed about a world; the environment holds what changes."""

    config: SimConfig
    population: Population
    catalog: Catalog
    truth: GroundTruth
    favourite_topic: np.ndarray  # int per user: the profile's stated favourite topic, -1 when unstated

    @classmethod
    def build(cls, config: SimConfig) -> World:
        """Draw a world. Independent random streams for people and catalog, so one does not shift the other.

        The fifth child of the seed draws the people's last click before the period (the second and third
        seed the environment and ``--messy``: ``nbm.simulate.generate``), so that adding it left every
        other draw as it was.
        """
        people_seed, catalog_seed = np.random.SeedSequence(config.seed).spawn(2)
        click_seed = np.random.SeedSequence(config.seed).spawn(5)[4]
        population = build_population(config, np.random.default_rng(people_seed), np.random.default_rng(click_seed))
        catalog = build_catalog(config, np.random.default_rng(catalog_seed))
        stated = population.attributes["favourite_category"]
        lookup = {t: i for i, t in enumerate(config.topics)}
        favourite = stated.map(lookup).fillna(-1).to_numpy(dtype=np.int64)
        return cls(config, population, catalog, GroundTruth(config, population, catalog), favourite)

    def user_index(self, user_ids) -> np.ndarray:
        """Population index of canonical user ids (-1 for an id the world does not know)."""
        return pd.Index(self.population.user_ids).get_indexer(np.asarray(user_ids, dtype=object))

    def message_index(self, message_ids) -> np.ndarray:
        """Catalog index of message ids (-1 for an unknown id)."""
        return pd.Index(self.catalog.table["message_id"]).get_indexer(np.asarray(message_ids, dtype=object))

    def channel_index(self, channels) -> np.ndarray:
        """Index into ``config.channels`` (-1 for an unknown channel)."""
        return pd.Index(self.config.channels).get_indexer(np.asarray(channels, dtype=object))
