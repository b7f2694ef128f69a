"""Explorers, by name: one class per file under :class:`~nbm.policy.explore.base.Explorer`."""

from nbm.policy.explore.base import Choice, Explorer, ThompsonStatistics
from nbm.policy.explore.epsilon_greedy import EpsilonGreedy
from nbm.policy.explore.greedy import Greedy
from nbm.policy.explore.softmax import Softmax
from nbm.policy.explore.thompson import Thompson

EXPLORERS: dict[str, type[Explorer]] = {cls.name: cls for cls in (Greedy, EpsilonGreedy, Softmax, Thompson)}


def make_explorer(name: str, settings=None) -> Explorer:
    """The explorer named ``name`` with the parameters of ``settings`` (``NbmConfig.explorer``: ε, temperature,
    Thompson's samples); the classes' defaults without it."""
    if name not in EXPLORERS:
        raise ValueError(f"unknown explorer {name!r}; expected one of {sorted(EXPLORERS)}")
    if settings is None:
        return EXPLORERS[name]()
    parameters = {"epsilon_greedy": {"epsilon": settings.epsilon}, "softmax": {"temperature": settings.temperature},
                  "thompson": {"samples": settings.thompson_samples}}
    return EXPLORERS[name](**parameters.get(name, {}))


__all__ = ["EXPLORERS", "Choice", "EpsilonGreedy", "Explorer", "Greedy", "Softmax", "Thompson", "ThompsonStatistics",
           "make_explorer"]
