"""Explorers, by name: one class per file under :class:`~nbm.policy.explore.base.Explorer`."""

from nbm.policy.explore.base import Arms, Choice, Explorer
from nbm.policy.explore.epsilon_greedy import EpsilonGreedy
from nbm.policy.explore.greedy import Greedy
from nbm.policy.explore.softmax import Softmax
from nbm.policy.explore.thompson import Thompson

EXPLORERS: dict[str, type[Explorer]] = {cls.name: cls for cls in (Greedy, EpsilonGreedy, Softmax, Thompson)}

__all__ = ["EXPLORERS", "Arms", "Choice", "EpsilonGreedy", "Explorer", "Greedy", "Softmax", "Thompson"]
