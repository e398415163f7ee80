"""`metarobust train` (metarobust.cli.train): Ctrl-C names the checkpoint to resume from.
(A bad --learner is refused in test_cli_eval's train-then-eval test.)"""

from __future__ import annotations

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
