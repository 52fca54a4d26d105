"""Policy optimization on a verifiable task: GRPO family, PPO with a value head, TTRL.

- `update`: the jitted `update(state, batch) -> (state, metrics)`, `Algorithm`, the optimizer;
- `rollout`: sampling G completions per prompt, the update batch, `RLStep` for `loop.fit`;
- `rewards`: rewards by name (verifier, outcome_rm, prm_dense, ttrl) for any `Task`;
- `evaluation`: held-out greedy pass@1, sampled pass@1 and maj@k;
- `run`: an experiment from its config (`experiments/rl.py`).

Modules are imported by name (`from rewardlab.rl import run`); this file imports none,
so the training core may use `evaluation` without loading the whole package.
"""
