"""`metarobust train` (metarobust.cli.train): Ctrl-C names the checkpoint to resume from;
errors name the options as the user gave them (command line or config file) with their
values; --steps and --episodes; a finished run run again does nothing; --tensorboard without
tensorboard installed. (A bad --learner is refused in test_cli_eval's train-then-eval
test.)"""

from __future__ import annotations

import json

from metarobust.checkpoint import load_checkpoint


def test_cli_ctrl_c_names_the_checkpoint(tmp_path, monkeypatch, capsys):
    from metarobust import cli
    from metarobust.learners.protonet import ProtoNet

    original = ProtoNet.meta_backward
    calls = {"n": 0}

    def interrupt_at_3(self, batch, ways, **kw):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(self, batch, ways, **kw)

    monkeypatch.setattr(ProtoNet, "meta_backward", interrupt_at_3)
    run = tmp_path / "run"
    code = cli.main(["train", "--learner", "protonet", "--dataset", "glyphs", "--glyph-classes",
                     "30", "--ways", "5", "--shots", "1", "--queries", "3", "--episodes", "10",
                     "--device", "cpu", "--out", str(run)])
    err = capsys.readouterr().err
    assert code == 130 and f"{run / 'last.pt'}" in err and "resume" in err
    assert load_checkpoint(run / "last.pt")["step"] == 2


TRAIN = ["train", "--learner", "protonet", "--dataset", "glyphs", "--glyph-classes", "30",
         "--device", "cpu"]


def _train(tmp_path, *argv):
    from metarobust import cli

    return cli.main([*TRAIN, *argv, "--out", str(tmp_path / "run")])


def test_a_validation_error_names_the_validation_options(tmp_path, capsys):
    # --queries 5 is fine; the validation episodes (test_shots 10 from --shots, test_queries
    # 15 by default) need more items than a glyph class has
    assert _train(tmp_path, "--ways", "5", "--shots", "10", "--queries", "5",
                  "--episodes", "4") == 2
    err = capsys.readouterr().err
    assert err.startswith("metarobust: error: test_shots + test_queries: 10 + 15 = 25 is more "
                          "than the 20 items"), err
    assert "validation episodes" in err and "so --shots 10" in err
    assert "test_queries not set (--test-queries), so 15" in err


def test_errors_name_the_option_as_given_and_its_value(tmp_path, capsys):
    assert _train(tmp_path, "--shots", "1", "--queries", "30", "--episodes", "4") == 2
    err = capsys.readouterr().err
    assert "shots + queries: 1 + 30 = 31 is more than" in err and "[--shots 1; --queries 30]" in err
    config = tmp_path / "c.toml"
    config.write_text("queries = 0\nepisodes = 4\n")
    assert _train(tmp_path, "--config", str(config)) == 2
    err = capsys.readouterr().err
    assert "queries: training needs >= 1 query per class, got 0" in err
    assert f"[queries = 0 in {config}]" in err


def test_a_config_value_of_the_wrong_type_is_named(tmp_path, capsys):
    config = tmp_path / "c.toml"
    config.write_text('ways = "five"\nepisodes = 4\n')
    assert _train(tmp_path, "--config", str(config)) == 2
    err = capsys.readouterr().err
    assert err == f"metarobust: error: ways: expected int, got 'five' (str) in {config}\n"


def test_steps_and_episodes_on_the_command_line(tmp_path, capsys):
    config = tmp_path / "c.toml"
    config.write_text("episodes = 100\n")  # a budget given on the command line replaces it
    assert _train(tmp_path, "--config", str(config), "--queries", "3", "--test-queries", "3",
                  "--meta-batch", "2", "--steps", "2", "--val-every", "100") == 0
    result = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert result["steps"] == 2 and result["episodes"] == 4
    assert _train(tmp_path, "--meta-batch", "2", "--steps", "2", "--episodes", "6") == 2
    err = capsys.readouterr().err
    assert "steps, episodes: steps 2 and episodes 6 disagree" in err
    assert "[--steps 2; --episodes 6]" in err


def test_a_finished_run_run_again_does_nothing(tmp_path, capsys, monkeypatch):
    from metarobust.train import Trainer

    argv = ["--queries", "3", "--test-queries", "3", "--episodes", "3", "--val-every", "2",
            "--val-episodes", "4", "--log-every", "1"]
    assert _train(tmp_path, *argv) == 0
    first = json.loads(capsys.readouterr().out.splitlines()[-1])
    metrics = (tmp_path / "run" / "metrics.jsonl").read_bytes()
    files = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "run").iterdir()}

    def no_validation(self):
        raise AssertionError("a finished run was validated again")

    monkeypatch.setattr(Trainer, "validate", no_validation)
    assert _train(tmp_path, *argv) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"{tmp_path / 'run'}: this run already finished at step 3 (3 "
                             f"episodes; best_val_accuracy {first['best_val_accuracy']}")
    again = json.loads(out[-1])
    assert {k: again[k] for k in ("steps", "episodes", "best_val_accuracy")} == \
        {k: first[k] for k in ("steps", "episodes", "best_val_accuracy")}
    assert (tmp_path / "run" / "metrics.jsonl").read_bytes() == metrics
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "run").iterdir()} == files


def test_tensorboard_asked_for_but_not_installed(tmp_path, capsys, monkeypatch):
    from metarobust import callbacks

    monkeypatch.setattr(callbacks, "tensorboard_installed", lambda: False)
    assert _train(tmp_path, "--episodes", "2", "--tensorboard") == 2
    err = capsys.readouterr().err
    assert "tensorboard: TensorBoard event files need the tensorboard package" in err
    assert "metarobust[tensorboard]" in err and "[--tensorboard]" in err
    assert not (tmp_path / "run").exists()
