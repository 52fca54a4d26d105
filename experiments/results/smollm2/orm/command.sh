#!/bin/bash
# Outcome RM from SmolLM2-135M-Instruct's own right / wrong samples, then best-of-N with it.
set -e
cd $REPO
M=/root/.cache/rewardlab/smollm2-135m-instruct
D=experiments/results/smollm2/data
W=/work/runs/smollm2_orm
T="{question}
Write the one calculation, then end with '#### <answer>'."
TASK=(--config.task.name=math --config.task.format=gsm8k --config.task.train_files=$D/train.jsonl
      --config.task.eval_files=$D/test.jsonl "--config.task.template=$T")
export PYTHONPATH=$PWD
uptime
/usr/bin/time -v .venv/bin/python experiments/policy_pairs.py --config experiments/configs/policy_pairs.py \
  --workdir $W/pairs --config.policy_dir=$M "${TASK[@]}" --config.num_problems=${NPROB:-320} \
  --config.samples=8 --config.pairs_per_problem=3 --config.temperature=0.7 --config.max_new_tokens=64 --config.progress=false
.venv/bin/python - <<PY
import json
rows = [json.loads(l) for l in open("$W/pairs/preference.jsonl")]
problems = sorted({r["problem"] for r in rows}, key=lambda k: [r["problem"] for r in rows].index(k))
held = set(problems[int(len(problems) * 0.85):])
for name, keep in (("train", lambda r: r["problem"] not in held), ("eval", lambda r: r["problem"] in held)):
  with open(f"$W/pairs/preference_{name}.jsonl", "w") as f:
    n = 0
    for r in rows:
      if keep(r):
        f.write(json.dumps(r) + "\n"); n += 1
  print(name, n, "pairs")
PY
uptime
/usr/bin/time -v .venv/bin/python experiments/train_rm.py --config experiments/configs/rm_bt.py \
  --workdir $W/rm --config.init_from=$M --config.data.source=files --config.data.format=preference \
  --config.data.train_files=$W/pairs/preference_train.jsonl --config.data.eval_files=$W/pairs/preference_eval.jsonl \
  --config.data.tokenizer=$M --config.model.max_length=192 --config.lora.rank=16 --config.lora.alpha=32 \
  --config.train.steps=${RMSTEPS:-40} --config.train.batch_size=8 --config.train.learning_rate=2e-4 \
  --config.train.warmup_steps=4 --config.train.log_every=5 --config.train.checkpoint_every=20 \
  --config.eval.batch_size=16 --config.progress=false
uptime
/usr/bin/time -v .venv/bin/python experiments/tts.py --config experiments/configs/tts.py --workdir $W/tts \
  --config.policy_dir=$M "${TASK[@]}" --config.reward.outcome_dir=$W/rm/reward_model \
  "--config.methods=('majority','best_of_n','weighted_best_of_n')" --config.n_max=8 --config.batch_size=100 \
  --config.problems.num=100 --config.sampling.max_new_tokens=64 --config.sampling.temperature=0.7 --config.progress=false
uptime
