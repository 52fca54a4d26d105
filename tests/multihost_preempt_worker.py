"""One process of the two-process preemption test in test_preemption.py (run as a script).

Process 1 receives SIGTERM during step 3; process 0 receives nothing. Both must stop
after the same step, checkpoint it together and exit with status 143.
"""

import os
import signal
import sys

import jax

jax.config.update("jax_cpu_collectives_implementation", "gloo")
port, process_id, workdir = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2,
                           process_id=process_id, initialization_timeout=120)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from rewardlab import sharding  # noqa: E402
from rewardlab.data import pipeline  # noqa: E402
from rewardlab.train import loop  # noqa: E402
from rewardlab.train import state as state_lib  # noqa: E402
from rewardlab.train import step as step_lib  # noqa: E402

mesh = sharding.make_mesh((-1, 1, 1))  # the batch spans both processes
replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
w = jax.make_array_from_callback((2,), replicated, lambda index: np.zeros(2, np.float32)[index])
tx = optax.sgd(0.05)
state = state_lib.TrainState.create({"w": w}, tx)
loss_fn = lambda params, batch: (jnp.mean((batch["x"] @ params["w"] - batch["y"]) ** 2), {})
step = step_lib.make_train_step(loss_fn, tx, mesh=mesh,
                                state_shardings=step_lib.state_shardings_of(state))
examples = [{"x": np.float32([i % 5, 1.0]), "y": np.float32(2.0 * (i % 5) - 1.0)}
            for i in range(64)]
data = pipeline.make_iterator(examples, batch_size=4, seed=0, shard_index=process_id,
                              shard_count=2)


def train_step(state, batch):
  state, metrics = step(state, batch)
  if process_id == 1 and int(state.step) == 3:
    os.kill(os.getpid(), signal.SIGTERM)
  return state, metrics


loop.fit(state, train_step, data, workdir=workdir, total_steps=50, log_every=1,
         checkpoint_every=0, mesh=mesh, progress=False)
print("process", process_id, "was not stopped")
