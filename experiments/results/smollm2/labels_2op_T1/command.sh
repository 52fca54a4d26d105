cd /work/wt/evidence
M=/root/.cache/rewardlab/smollm2-135m-instruct
D=experiments/results/smollm2/data_labels
uptime
PYTHONPATH=$PWD /usr/bin/time -v /work/main/.venv/bin/python experiments/label_steps.py --config experiments/configs/label_steps.py --workdir runs/smollm2_labels \
  --config.policy_dir=$M --config.task.name=math --config.task.format=gsm8k \
  --config.task.train_files=$D/train.jsonl \
  "--config.task.template={question}
Solve it step by step, one step per line, and end with '#### <answer>'." \
  --config.data.num_problems=8 --config.num_solutions=4 --config.problems_per_batch=8 \
  --config.sampling.max_new_tokens=64 --config.sampling.batch_size=32 \
  --config.mc.num_completions=4 "--config.mc.quality_levels=(1,2,4)" \
  --config.omegaprm.rollouts_per_state=4 --config.omegaprm.max_searches=4 --config.omegaprm.rollout_budget=32 \
  "--config.omegaprm.quality_levels=(8,16,32)" --config.progress=false
uptime
