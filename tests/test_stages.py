import json

import pytest

from rewardlab import stages


def _recorder(calls, name, fail=False):
    def fn(stage_dir, inputs):
        calls.append((name, sorted(inputs)))
        if fail:
            raise RuntimeError(f"{name} interrupted")
        with open(f"{stage_dir}/out.txt", "w") as f:
            f.write(name)
        return {"value": len(inputs)}
    return fn


def test_stages_run_in_order_and_are_skipped_when_done(tmp_path):
    calls = []
    pipeline = [stages.Stage("a", _recorder(calls, "a"), {"x": 1}),
                stages.Stage("b", _recorder(calls, "b"), {"y": (1, 2)})]
    done = stages.run_stages(pipeline, str(tmp_path))
    assert calls == [("a", []), ("b", ["a"])]
    assert done == {"a": {"value": 0}, "b": {"value": 1}}
    record = json.loads((tmp_path / "b" / stages.STAGE_FILE).read_text())
    assert record["config"] == {"y": [1, 2]} and record["seconds"] >= 0
    assert stages.run_stages(pipeline, str(tmp_path)) == done
    assert len(calls) == 2  # nothing ran again
    assert set(stages.stage_seconds(str(tmp_path), ["a", "b", "c"])) == {"a", "b"}


def test_an_interrupted_stage_runs_again_and_the_done_ones_do_not(tmp_path):
    calls = []
    failing = [stages.Stage("a", _recorder(calls, "a")), stages.Stage("b", _recorder(calls, "b", True))]
    with pytest.raises(RuntimeError, match="interrupted"):
        stages.run_stages(failing, str(tmp_path))
    assert not (tmp_path / "b" / stages.STAGE_FILE).exists()
    fixed = [stages.Stage("a", _recorder(calls, "a")), stages.Stage("b", _recorder(calls, "b"))]
    stages.run_stages(fixed, str(tmp_path))
    assert [c[0] for c in calls] == ["a", "b", "b"]


def test_stop_after_and_only(tmp_path):
    calls = []
    pipeline = [stages.Stage(n, _recorder(calls, n)) for n in "abc"]
    assert set(stages.run_stages(pipeline, str(tmp_path), stop_after="a")) == {"a"}
    assert set(stages.run_stages(pipeline, str(tmp_path), only=["c"])) == {"a", "c"}
    assert [c[0] for c in calls] == ["a", "c"]
    with pytest.raises(ValueError, match="unknown stages"):
        stages.run_stages(pipeline, str(tmp_path), only=["z"])


def test_a_changed_config_of_a_done_stage_is_an_error(tmp_path):
    calls = []
    stages.run_stages([stages.Stage("a", _recorder(calls, "a"), {"lr": 1e-3})], str(tmp_path))
    with pytest.raises(stages.StageConfigError, match=r"stage 'a'.*done.*lr: 0.001 -> 0.002"):
        stages.run_stages([stages.Stage("a", _recorder(calls, "a"), {"lr": 2e-3})], str(tmp_path))


def test_an_interrupted_stage_resumed_with_another_config_is_an_error(tmp_path):
    # A killed stage (checkpoints, no stage.json) must not continue under a changed config.
    calls = []
    with pytest.raises(RuntimeError, match="interrupted"):
        stages.run_stages([stages.Stage("rl", _recorder(calls, "rl", fail=True),
                                        {"learning_rate": 1e-4, "progress": True})], str(tmp_path))
    assert not (tmp_path / "rl" / stages.STAGE_FILE).exists()
    changed = [stages.Stage("rl", _recorder(calls, "rl"), {"learning_rate": 3e-4,
                                                           "progress": True})]
    with pytest.raises(stages.StageConfigError,
                       match=r"stage 'rl'.*started.*learning_rate: 0.0001 -> 0.0003"):
        stages.run_stages(changed, str(tmp_path))
    same = [stages.Stage("rl", _recorder(calls, "rl"), {"learning_rate": 1e-4, "progress": True})]
    stages.run_stages(same, str(tmp_path))
    assert [c[0] for c in calls] == ["rl", "rl"]


def test_stage_files_are_strict_json_with_non_finite_values_as_null(tmp_path):
    pipeline = [stages.Stage("a", lambda d, i: {"auroc": float("nan"), "x": [1.0, float("inf")]})]
    assert stages.run_stages(pipeline, str(tmp_path)) == {"a": {"auroc": None, "x": [1.0, None]}}
    text = (tmp_path / "a" / stages.STAGE_FILE).read_text()
    assert "NaN" not in text and "Infinity" not in text
    json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c} in stage.json"))


def test_an_always_stage_runs_every_time(tmp_path):
    calls = []
    pipeline = [stages.Stage("a", _recorder(calls, "a")),
                stages.Stage("report", _recorder(calls, "report"), always=True)]
    stages.run_stages(pipeline, str(tmp_path))
    stages.run_stages(pipeline, str(tmp_path))
    assert [c[0] for c in calls] == ["a", "report", "report"]


def test_a_moved_run_directory_resumes_with_its_paths_moved(tmp_path):
    # Stage summaries hold paths of their artifacts; later stages read them as inputs.
    seen = []

    def producer(stage_dir, inputs):
        path = f"{stage_dir}/model"
        with open(path, "w") as f:
            f.write("weights")
        return {"model": path, "files": [path], "elsewhere": "/opt/data.json"}

    def consumer(stage_dir, inputs):
        with open(inputs["a"]["model"]) as f:
            seen.append((inputs["a"]["model"], f.read()))
        return {}

    old, new = tmp_path / "old", tmp_path / "new"
    stages.run_stages([stages.Stage("a", producer)], str(old))
    record = json.loads((old / "a" / stages.STAGE_FILE).read_text())
    assert record["summary"]["model"] == "${workdir}/a/model"
    assert record["summary"]["elsewhere"] == "/opt/data.json"  # outside the run: kept
    old.rename(new)
    done = stages.run_stages([stages.Stage("a", producer), stages.Stage("b", consumer)],
                             str(new))
    assert seen == [(str(new / "a" / "model"), "weights")]
    assert done["a"]["files"] == [str(new / "a" / "model")]
