cd /work/wt/evidence
M=/root/.cache/rewardlab/smollm2-135m-instruct
D=experiments/results/smollm2/data
uptime
PYTHONPATH=$PWD /usr/bin/time -v /work/main/.venv/bin/python experiments/tts.py --config experiments/configs/tts.py --workdir runs/smollm2_tts \
  --config.policy_dir=$M --config.task.name=math --config.task.format=gsm8k \
  --config.task.eval_files=$D/test.jsonl \
  "--config.task.template={question}
Write the one calculation, then end with '#### <answer>'." \
  "--config.methods=('majority',)" --config.n_max=8 --config.batch_size=100 --config.problems.num=100 \
  --config.sampling.max_new_tokens=64 --config.sampling.temperature=0.7 --config.progress=false
uptime
