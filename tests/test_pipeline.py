"""The end-to-end pipeline at test size: stages, resume, report."""
import json

import pytest

from experiments import pipeline
from experiments.configs import pipeline as pipeline_config
from rewardlab import stages
from rewardlab.eval import compare

PNG = b"\x89PNG\r\n\x1a\n"


def _finished(workdir):
    return {name: json.loads((workdir / name / stages.STAGE_FILE).read_text())["finished"]
            for name in pipeline.STAGES if (workdir / name / stages.STAGE_FILE).exists()}


@pytest.mark.slow
def test_pipeline_runs_resumes_and_reports(tmp_path):
    cfg = pipeline_config.tiny()
    done = pipeline.run(cfg, str(tmp_path), stop_after="labels")  # as if interrupted
    assert list(done) == ["sft", "rollouts", "labels"]
    done = pipeline.run(cfg, str(tmp_path))
    assert list(done) == list(pipeline.STAGES)

    # Artifacts of each stage, in the public formats the other experiments read.
    assert (tmp_path / "sft" / "policy" / "model.safetensors").exists()
    roll = done["rollouts"]
    assert roll["train"]["samples"] == 16 * 4 and roll["eval"]["samples"] == 8 * 4
    pairs = [json.loads(line) for line in open(roll["files"]["preference_train"])]
    assert len(pairs) == roll["train"]["pairs"]
    assert all({"prompt", "chosen", "rejected"} <= set(p) for p in pairs)
    assert 0.0 <= roll["policy_likelihood_pairwise_accuracy"] <= 1.0
    kinds = roll["eval"]["error_kinds"]
    assert sum(kinds.values()) == roll["eval"]["solutions_with_wrong_step"]
    steps = [json.loads(line) for line in open(roll["files"]["steps_eval"])]
    for row in steps:  # exact labels: ones, then zeros from the first wrong step
        labels = row["labels"]
        assert len(labels) == len(row["completions"]) and labels == sorted(labels, reverse=True)
        assert (row["first_wrong_step"] < 0) == all(labels)
    prm_rows = [json.loads(line) for line in open(done["labels"]["files"]["prm_train"])]
    assert prm_rows and all(y in (0.0, 1.0) for r in prm_rows for y in r["labels"])  # hard
    for name, kind in (("rm_orm", "bt"), ("rm_prm", "prm"), ("rm_genarm", "genarm")):
        assert done[name]["kind"] == kind
        assert (tmp_path / name / "reward_model").is_dir()
    tts = json.loads((tmp_path / "tts" / "tts_results.json").read_text())
    assert set(tts["methods"]) == set(cfg.tts.methods) and tts["skipped"] == {}
    assert (tmp_path / "rl" / "policy" / "model.safetensors").exists()

    # The report: markdown + json + plots, self-contained in report/.
    report_dir = tmp_path / "report"
    md = (report_dir / "report.md").read_text()
    for section in ("## Step labels", "## Reward models", "## Test-time scaling", "## GRPO",
                    "## Which claims", "## Runtime"):
        assert section in md
    for png in ("accuracy_vs_n.png", "accuracy_vs_tokens.png", "prm_reliability.png",
                "rl_curves.png", "labels_quality.png"):
        assert (report_dir / png).read_bytes()[:8] == PNG, png
        assert f"({png})" in md
    report = json.loads((report_dir / "report.json").read_text())
    assert set(report["stage_seconds"]) == set(pipeline.STAGES) - {"report"}
    claims = report["claims"]
    assert len(claims) >= 9
    assert {c["verdict"] for c in claims} <= {compare.REPRODUCED, compare.CONTRADICTED,
                                              compare.UNRESOLVED}
    grpo = next(c for c in claims if c["paper"].startswith("DeepSeekMath"))
    assert grpo["a"] == pytest.approx(report["rl"]["after"])
    assert grpo["b"] == pytest.approx(report["rl"]["before"])

    # Running again skips every done stage and only rebuilds the report.
    before = _finished(tmp_path)
    pipeline.run(cfg, str(tmp_path))
    after = _finished(tmp_path)
    assert {k: v for k, v in after.items() if k != "report"} == \
        {k: v for k, v in before.items() if k != "report"}

    # A changed config of a done stage is refused, never silently reused.
    changed = cfg.unlock()
    changed.rm.steps = 3
    with pytest.raises(stages.StageConfigError, match="rm_orm"):
        pipeline.run(changed.lock(), str(tmp_path))


def test_reward_model_stages_record_only_the_fields_they_use():
  cfg = pipeline_config.get_config()
  changed = cfg.unlock().copy_and_resolve_references()
  changed.rm.prm_bias, changed.rm.genarm_beta = 0.5, 0.2
  for kind, differs in (("bt", False), ("prm", True), ("genarm", True)):
    before, after = pipeline._rm_stage_config(cfg, kind), pipeline._rm_stage_config(changed, kind)
    assert (before != after) == differs, kind
  assert "prm_bias" not in pipeline._rm_stage_config(cfg, "genarm")
  assert "genarm_beta" not in pipeline._rm_stage_config(cfg, "prm")
  changed.rm.steps = 7  # shared by every reward model
  assert all(pipeline._rm_stage_config(changed, k)["steps"] == 7 for k in ("bt", "prm", "genarm"))


def test_bad_label_settings_raise():
    cfg = pipeline_config.tiny().unlock()
    cfg.labels.target = "medium"
    with pytest.raises(ValueError, match="labels.target"):
        pipeline.build_stages(cfg.lock(), "unused")
    cfg = pipeline_config.tiny().unlock()
    cfg.labels.train_on = ("human",)
    with pytest.raises(ValueError, match="labels.train_on"):
        pipeline.build_stages(cfg.lock(), "unused")


def test_the_task_section_sets_the_problems_of_every_stage():
    cfg = pipeline_config.tiny().unlock()
    cfg.task.operand_max = 20
    cfg = cfg.lock()
    assert pipeline._problems(5, 11, cfg, "train") == pipeline.arithmetic.generate_problems(
        5, seed=11, num_ops=(2,), operand_max=20, split="train")
    fields = pipeline._task_fields(cfg)
    assert fields["task__num_ops"] == (2,) and fields["task__operand_max"] == 20
    assert set(fields) == {f"task__{k}" for k in pipeline_config.source.config()}
    cfg = pipeline_config.tiny().unlock()
    cfg.task.name, cfg.task.eval_files = "math", "tests/fixtures/gsm8k.jsonl"
    with pytest.raises(ValueError, match="needs --config.policy_dir"):  # the SFT policy reads
        pipeline.build_stages(cfg.lock(), "unused")                      # arithmetic only
