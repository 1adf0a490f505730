"""Sweeps: a sweep YAML checked (`config`), resolved from the command line (`target`), stored
(`store`), decided on by the embedded controller (`controller`), and worked on by agents
(`agent_loop`), locally or against W&B's server."""
