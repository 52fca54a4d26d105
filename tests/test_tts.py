"""The test-time scaling experiment end to end at a tiny size (random policy, oracle scorers)."""
import json
import os
import signal

import jax
import numpy as np
import pytest

from experiments.configs import sft as sft_config
from experiments.configs import tts as tts_config
from rewardlab import models
from rewardlab.data.tokenizers import CharTokenizer
from rewardlab.search.methods import Scorers
from rewardlab.search.policy import Completion, LMPolicy
from rewardlab.tasks import MathProblem, MathTask
from rewardlab.train import interrupt, sft, tts

TOK = CharTokenizer.for_arithmetic()
CONFIG = sft.model_config(sft_config.tiny(), TOK)
PARAMS = models.init_params(CONFIG, jax.random.key(0))
POLICY = LMPolicy(CONFIG, PARAMS, TOK)
GUIDE = (CONFIG, jax.tree.map(lambda x: -1.5 * x, PARAMS))  # a second random model


def _config(**changes):
    cfg = tts_config.tiny().unlock()
    for key, value in changes.items():
        cfg[key] = value
    return cfg.lock()


def test_every_method_writes_well_formed_curves(tmp_path):
    cfg = _config()
    oracle = tts.ArithmeticOracle()
    scorers = Scorers(outcome=oracle, process=oracle, guides=(GUIDE,), alphas=(1.0,))
    out = tts.run(cfg, str(tmp_path), policy=POLICY, scorers=scorers)
    saved = json.loads((tmp_path / "tts_results.json").read_text())
    assert saved == json.loads(json.dumps(out))
    assert saved["ns"] == [1, 2] and saved["num_problems"] == 2 and saved["skipped"] == {}
    assert set(saved["methods"]) == set(cfg.methods)
    for name, m in saved["methods"].items():
        assert m["n"] == [1, 2]
        correct = np.asarray(m["per_problem_correct"])
        assert correct.shape == (2, 2) and set(correct.ravel()) <= {0, 1}
        np.testing.assert_allclose(m["accuracy"], correct.mean(axis=1))
        assert all(lo <= a <= hi for lo, a, hi in zip(m["ci_low"], m["accuracy"], m["ci_high"]))
        assert 0 < m["tokens_generated"][0] <= m["tokens_generated"][1], name
        assert m["tokens_scored"][0] <= m["tokens_scored"][1], name
        needs_reward = name not in ("majority", "genarm")
        assert (m["tokens_scored"][1] > 0) == needs_reward, name
    # The plain methods share one draw: equal generated tokens, and pass@n bounds them all.
    plain = [saved["methods"][k] for k in tts.PREFIX_METHODS]
    assert all(m["tokens_generated"] == plain[0]["tokens_generated"] for m in plain)
    assert all(a <= p + 1e-9 for m in plain for a, p in zip(m["accuracy"],
                                                           saved["pass@n"]["accuracy"]))
    for png in ("accuracy_vs_n.png", "accuracy_vs_tokens.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_methods_without_their_reward_model_are_skipped(tmp_path):
    cfg = _config(methods=("majority", "best_of_n", "beam_search", "genarm"))
    out = tts.run(cfg, str(tmp_path), policy=POLICY, scorers=Scorers())
    assert list(out["methods"]) == ["majority"]
    assert set(out["skipped"]) == {"best_of_n", "beam_search", "genarm"}
    assert "process reward model" in out["skipped"]["beam_search"]


def test_bad_configs_raise(tmp_path):
    with pytest.raises(ValueError, match="unknown"):
        tts.run(_config(methods=("mcts",)), str(tmp_path), policy=POLICY, scorers=Scorers())
    with pytest.raises(ValueError, match="policy_dir is empty"):
        tts.run(_config(), str(tmp_path), scorers=Scorers())
    cfg = tts_config.tiny().unlock()
    cfg.beam.width, cfg.n_max = 4, 6
    with pytest.raises(ValueError, match="beam.width=4 does not divide"):
        tts.run(cfg.lock(), str(tmp_path), policy=POLICY, scorers=Scorers())


def test_oracle_scores_steps_up_to_the_first_wrong_one():
    oracle = tts.ArithmeticOracle()
    prompt = "Q:3+4*2\n"
    got = oracle.score_steps([prompt] * 3, [["3+4=7", "7*2=15"], ["3+4=7"], ["3+4=7", "7*2=14",
                                                                            "A:14"]])
    assert [g.tolist() for g in got] == [[1.0, 0.0], [1.0], [1.0, 1.0, 1.0]]
    assert oracle.score([prompt, prompt], ["3+4=7\n7*2=14\nA:14\n", "A:15\n"]).tolist() == [1, 0]
    assert oracle.tokens_scored == 3 * 8 + (6 + 7) + 6 + (6 + 7 + 5) + 2 * 8 + 18 + 5


def test_load_scorers_reads_saved_reward_models(tmp_path):
    from rewardlab.models import reward as reward_lib

    dirs = {}
    for head in ("outcome", "process", "genarm"):
        rm = reward_lib.RewardModelConfig(backbone=CONFIG, head=head)
        shapes = jax.eval_shape(lambda key: reward_lib.init_head(rm, key), jax.random.key(0))
        head_params = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)
        dirs[head] = str(tmp_path / head)
        reward_lib.save_reward_model(dirs[head], rm, {"backbone": PARAMS, "head": head_params}, TOK)
    cfg = tts_config.tiny().unlock()
    cfg.reward.outcome_dir, cfg.reward.process_dir = dirs["outcome"], dirs["process"]
    cfg.reward.guide_dirs, cfg.reward.alphas = (dirs["genarm"],), (0.5,)
    scorers = tts.load_scorers(cfg)
    assert isinstance(scorers.outcome, reward_lib.OutcomeScorer)
    assert isinstance(scorers.process, reward_lib.ProcessScorer)
    (guide_config, guide_params), = scorers.guides
    assert guide_config.replace(head_dim=None) == CONFIG and scorers.alphas == (0.5,)
    np.testing.assert_array_equal(guide_params["lm_head"], PARAMS["lm_head"])
    cfg.reward.guide_dirs = (dirs["outcome"],)
    with pytest.raises(ValueError, match="a 'outcome' reward model, expected one of"):
        tts.load_scorers(cfg)
    cfg.reward.oracle = True
    with pytest.raises(ValueError, match="reward.oracle replaces"):
        tts.load_scorers(cfg)


class _ConstantScorer:
    """An outcome scorer that prefers the answers `prefer` picks (1.0) over the rest (0.0)."""

    def __init__(self, prefer):
        self.prefer, self.tokens_scored = prefer, 0

    def score(self, prompts, completions):
        self.tokens_scored += 3 * len(completions)  # a distinct count from the oracle's
        return np.array([float(self.prefer(c)) for c in completions])


def test_reward_suffix_pins_the_scorer_of_best_of_n(tmp_path):
    # best_of_n_orm uses the outcome scorer and best_of_n_prm the process scorer, whatever
    # bon.reward says; the bare name follows bon.reward ("auto" = prm when there is one).
    oracle = tts.ArithmeticOracle()
    wrong_first = _ConstantScorer(lambda text: not text)  # prefers nothing: first sample
    cfg = _config(methods=("best_of_n", "best_of_n_orm", "best_of_n_prm",
                           "weighted_best_of_n_orm"), n_max=2)
    out = tts.run(cfg, str(tmp_path), policy=POLICY,
                  scorers=Scorers(outcome=wrong_first, process=oracle))
    m = out["methods"]
    assert m["best_of_n"]["per_problem_correct"] == m["best_of_n_prm"]["per_problem_correct"]
    assert m["best_of_n_orm"]["tokens_scored"] == m["weighted_best_of_n_orm"]["tokens_scored"]
    assert m["best_of_n_orm"]["tokens_scored"] != m["best_of_n_prm"]["tokens_scored"]
    assert tts.split_reward("weighted_best_of_n_prm") == ("weighted_best_of_n", "prm")
    assert tts.split_reward("majority") == ("majority", None)
    skipped = tts.run(_config(methods=("best_of_n_orm",)), str(tmp_path / "s"), policy=POLICY,
                      scorers=Scorers(process=oracle))["skipped"]
    assert "outcome" in skipped["best_of_n_orm"]


# ----------------------------------------------------------------------------- math tasks

WORD_PROBLEM = MathProblem("Mia has 3 apples. She buys 4 more. Then she has 2 times as many.",
                           "14", ("7", "14"))


def test_task_oracle_scores_math_solutions_by_their_claims():
    oracle = tts.TaskOracle(MathTask(), {"P": WORD_PROBLEM})
    got = oracle.score_steps(["P"] * 4, [["3 + 4 = 7", "7 * 2 = 15"], ["3 + 4 = 7"],
                                         ["3 + 4 = 7", "7 * 2 = 14", "#### 14"],
                                         ["She buys 4 more.", "#### 15"]])
    assert [g.tolist() for g in got] == [[1.0, 0.0], [1.0], [1.0, 1.0, 1.0], [1.0, 0.0]]
    assert oracle.score(["P", "P"], ["7 * 2 = 14\n#### 14", "\\boxed{15}"]).tolist() == [1, 0]
    with pytest.raises(KeyError, match="no problem for the prompt"):
        oracle.score(["Q"], ["#### 14"])


@pytest.mark.slow
def test_math_files_with_a_local_hf_model_and_its_chat_template(tmp_path):
    from hf_models import make_model, save_model
    from test_tokenizers import _save_bpe
    from test_task_source import CHAT_TEMPLATE

    model_dir = tmp_path / "model"
    tokenizer = _save_bpe(model_dir, chat_template=CHAT_TEMPLATE)
    save_model(make_model("llama", vocab_size=len(tokenizer)), model_dir)
    rows = [{"question": "Mia has 3 apples and buys 4 more.", "answer": "3 + 4 = 7\n#### 7",
             "intermediates": [7]},
            {"question": "Ravi has 5 coins and loses 2.", "answer": "5 - 2 = 3\n#### 3",
             "intermediates": [3]}]
    (tmp_path / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = tts_config.tiny().unlock()
    cfg.task.update(dict(name="math", eval_files=str(tmp_path / "test.jsonl"),
                         template="{question}"))
    cfg.policy_dir, cfg.reward.oracle, cfg.problems.num = str(model_dir), True, 0
    cfg.methods = ("majority", "best_of_n")  # best-of-N by the oracle PRM on chat prompts
    out = tts.run(cfg.lock(), str(tmp_path / "run"))
    assert out["num_problems"] == 2 and out["skipped"] == {}
    assert out["task"] == {"name": "math", "eval_files": str(tmp_path / "test.jsonl"),
                           "chat_template": True, "skipped_rows": {str(tmp_path / "test.jsonl"): 0}}
    for m in out["methods"].values():
        assert np.asarray(m["per_problem_correct"]).shape == (2, 2)
        assert m["tokens_generated"][0] > 0


class _FixedPolicy:
    """Writes the same solution for every prompt (no `step_separator` of its own)."""

    def __init__(self, text):
        self.text = text

    def sample(self, prompts, n, **kwargs):
        del kwargs
        return [[Completion(self.text, 5, True) for _ in range(n)] for _ in prompts]


class _RecordingPRM:
    def __init__(self):
        self.steps, self.tokens_scored = [], 0

    def score_steps(self, prompts, steps_lists):
        self.steps += [list(s) for s in steps_lists]
        return [np.ones(len(s)) for s in steps_lists]


def test_prm_best_of_n_splits_steps_on_the_task_separator(tmp_path):
    # The policy writes single line breaks inside a step; the task's separator is "\n\n",
    # so a PRM must see two steps, not four lines.
    rows = [{"question": "Mia has 3 apples and buys 4 more.", "answer": "3 + 4 = 7\n#### 7"}]
    (tmp_path / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = tts_config.tiny().unlock()
    cfg.task.update(dict(name="math", eval_files=str(tmp_path / "test.jsonl"),
                         step_separator="\n\n"))
    cfg.problems.num, cfg.n_max = 0, 2
    cfg.methods = ("best_of_n_prm", "weighted_best_of_n_prm")
    prm = _RecordingPRM()
    text = "She buys 4 more:\n3 + 4 = 7\n\nSo she has 7.\n#### 7"
    out = tts.run(cfg.lock(), str(tmp_path / "run"), policy=_FixedPolicy(text),
                  scorers=Scorers(process=prm))
    assert out["skipped"] == {}
    assert prm.steps and all(s == ["She buys 4 more:\n3 + 4 = 7", "So she has 7.\n#### 7"]
                             for s in prm.steps)
    assert out["methods"]["best_of_n_prm"]["accuracy"] == [1.0, 1.0]


class _SignallingOracle(tts.ArithmeticOracle):
    """The oracle, sending this process SIGTERM the first time it scores."""

    sent = False

    def _signal(self):
        if not self.sent:
            self.sent = True
            os.kill(os.getpid(), signal.SIGTERM)

    def score(self, prompts, completions):
        self._signal()
        return super().score(prompts, completions)

    def score_steps(self, prompts, steps_lists):
        self._signal()
        return super().score_steps(prompts, steps_lists)


def test_sigterm_keeps_the_methods_done_and_exits_non_zero(tmp_path):
    cfg = _config(methods=("majority", "best_of_n", "beam_search"))
    oracle = _SignallingOracle()
    scorers = Scorers(outcome=oracle, process=oracle)
    with pytest.raises(interrupt.Interrupted, match="stopped before method 'beam_search'") as err:
        tts.run(cfg, str(tmp_path), policy=POLICY, scorers=scorers)
    assert err.value.code == 143
    saved = json.loads((tmp_path / "tts_results.json").read_text())
    assert list(saved["methods"]) == ["majority", "best_of_n"]
    assert saved["stopped_before"] == "beam_search"
