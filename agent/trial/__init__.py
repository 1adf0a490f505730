"""One trial: a configuration trained on device-cached data and reported to the sinks.

`train(config) -> summary` (agent/trial/loop.py) is the whole job; agents call it many times in
one process.
"""

from agent.trial.loop import Preempted, TrialHooks, train

__all__ = ["Preempted", "TrialHooks", "train"]
