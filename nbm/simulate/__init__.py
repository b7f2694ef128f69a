"""The simulated CRM world: people, messages and a ground truth in which decisions can be judged.

``simulate(SimConfig(...))`` builds a world and the log its rule-based CRM wrote; ``Environment`` plays
any :class:`Policy` forward in a world and scores it on true value and regret; ``world_config(PRESET, ...)``
gives a world that differs from the default in structure (:data:`PRESETS`). See ``docs/simulator.md``.
"""

from nbm.simulate.config import EngagementParams, MessyRates, SimConfig
from nbm.simulate.context import Actions, DecisionContext
from nbm.simulate.environment import Environment
from nbm.simulate.generate import SimulatedData, logging_policy, simulate
from nbm.simulate.policies import EpsilonMixPolicy, NothingPolicy, OraclePolicy, Policy, UniformRandomPolicy
from nbm.simulate.population_oracle import PopulationOraclePolicy
from nbm.simulate.presets import PRESETS, Preset, world_config
from nbm.simulate.rules import RuleBasedPolicy
from nbm.simulate.truth import GroundTruth, Response
from nbm.simulate.world import World

__all__ = [
    "Actions", "DecisionContext", "EngagementParams", "Environment", "EpsilonMixPolicy", "GroundTruth",
    "MessyRates", "NothingPolicy", "OraclePolicy", "PRESETS", "Policy", "PopulationOraclePolicy", "Preset", "Response", "RuleBasedPolicy",
    "SimConfig", "SimulatedData", "UniformRandomPolicy", "World", "logging_policy", "simulate", "world_config",
]
