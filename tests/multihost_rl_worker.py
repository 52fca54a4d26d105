"""One process of the two-process RL test in test_mesh_scripts.py (run as a script): two RL
steps of the tiny config on a (2, 1, 2) mesh whose data axis spans both processes."""

import sys

import jax

jax.config.update("jax_cpu_collectives_implementation", "gloo")
port, process_id, workdir = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2,
                           process_id=process_id, initialization_timeout=120)

from rewardlab.rl import run as rl_run  # noqa: E402
from test_mesh_scripts import LengthScorer, rl_cfg  # noqa: E402

assert jax.process_count() == 2 and jax.device_count() == 4
result = rl_run.run(rl_cfg((2, 1, 2), reward="outcome_rm"), workdir,
                    outcome_scorer=LengthScorer())
final = {k: v for k, v in result["final"].items() if k != "elapsed_s"}
print("process", process_id, "steps", result["steps"], "final", final)
jax.distributed.shutdown()
