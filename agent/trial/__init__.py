"""One trial: a configuration trained on device-cached data and reported to the sinks, or K
compatible configurations trained together as one packed model, each reported as its own run.

`train(config) -> summary` and `train_pack(configs) -> summaries` (agent/trial/loop.py) are the
whole job; agents call them many times in one process. They are loaded on first use: the
parameter table reads the sink names from agent.trial.sinks, and checking a sweep or an
argument list should not wait for torch.
"""

__all__ = ["Preempted", "TrialHooks", "train", "train_pack"]


def __getattr__(name: str):
    if name in __all__:
        from agent.trial import loop

        return getattr(loop, name)
    raise AttributeError(f"module 'agent.trial' has no attribute {name!r}")
