#!/bin/bash
# GRPO on SmolLM2-135M-Instruct, verifier reward, one-operation GSM8K-format word problems.
cd $REPO
M=/root/.cache/rewardlab/smollm2-135m-instruct
D=experiments/results/smollm2/data
uptime
PYTHONPATH=$PWD /usr/bin/time -v .venv/bin/python experiments/rl.py --config experiments/configs/rl_grpo.py \
  --workdir runs/smollm2_grpo2 --config.policy_dir=$M \
  --config.task.name=math --config.task.format=gsm8k \
  --config.task.train_files=$D/train.jsonl --config.task.eval_files=$D/test.jsonl \
  "--config.task.template={question}
Write the one calculation, then end with '#### <answer>'." \
  --config.data.num_train=1000 --config.eval.num_problems=200 --config.eval.max_new_tokens=64 \
  --config.eval.maj_k=0 --config.rollout.batch_size=16 --config.rollout.group_size=8 \
  --config.rollout.update_groups=6 --config.rollout.max_new_tokens=64 \
  --config.rollout.max_prompt_length=112 --config.algo.num_minibatches=3 \
  --config.algo.kl_monitor_every=8 --config.optim.learning_rate=1e-5 \
  --config.algo.temperature=0.7 --config.optim.warmup_steps=2 --config.train.steps=12 \
  --config.train.eval_every=12 --config.train.checkpoint_every=4 --config.progress=false
uptime
