"""One trial: a configuration trained on device-cached data and reported to the sinks, or K
compatible configurations trained together as one packed model, each reported as its own run.

`train(config) -> summary` and `train_pack(configs) -> summaries` (agent/trial/loop.py) are the
whole job; agents call them many times in one process.
"""

from agent.trial.loop import Preempted, TrialHooks, train, train_pack

__all__ = ["Preempted", "TrialHooks", "train", "train_pack"]
