"""One process of the two-process test in test_sharding.py (run as a script)."""

import sys

import jax

jax.config.update("jax_cpu_collectives_implementation", "gloo")
port, process_id, out_dir = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2,
                           process_id=process_id, initialization_timeout=120)

import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax.experimental import multihost_utils  # noqa: E402
from safetensors.numpy import save_file  # noqa: E402

from rewardlab import models, sharding  # noqa: E402
from rewardlab.train import state as state_lib  # noqa: E402
from rewardlab.train import step as step_lib  # noqa: E402
from test_sharding import CONFIG, _batch, _loss_fn  # noqa: E402

assert jax.process_count() == 2 and jax.device_count() == 4
mesh = sharding.make_mesh((2, 1, 2))  # data spans both processes, tensor within each
tx = optax.sgd(0.5)
state = state_lib.TrainState.create(models.init_params(CONFIG, jax.random.key(7), mesh=mesh), tx)
step = step_lib.make_train_step(_loss_fn, tx, mesh=mesh,
                                state_shardings=step_lib.state_shardings_of(state))
batch = _batch(9)
half = batch["tokens"].shape[0] // 2
local = {k: v[process_id * half:(process_id + 1) * half] for k, v in batch.items()}
state, metrics = step(state, sharding.shard_batch(local, mesh))
params = multihost_utils.process_allgather(state.params, tiled=True)
if process_id == 0:
  flat = {"/".join(str(k.key) for k in path): np.asarray(v)
          for path, v in jax.tree_util.tree_flatten_with_path(params)[0]}
  save_file(flat, f"{out_dir}/params_after_step.safetensors")
print("process", process_id, "loss", float(metrics["loss"]))
jax.distributed.shutdown()
