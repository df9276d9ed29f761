"""The benchmark / GPU-check script's code path, on CPU with micro sizes (its figures come from real runs)."""
import runpy
import sys


def test_step_time_bench_runs_every_strategy(bios_path, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["step_time.py", "--preset", "micro", "--block-size", "32", "--batch-size", "4",
                                      "--bpe-vocab-size", "300", "--steps", "2", "--rounds", "1", "--n-process", "1",
                                      "--jsonl", str(bios_path), "--cache-dir", str(tmp_path / "cache"),
                                      "--strategies", "vanilla,lacy,loss_only,random_calls,spacy_only,rho1"])
    runpy.run_path("bench/step_time.py", run_name="__main__")
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if len(line.split()) == 6}  # table rows
    for name in ("lacy", "loss_only", "random_calls", "spacy_only", "rho1"):
        assert rows[name][-1] == "1"  # one SLM forward per step
        assert float(rows[name][-2]) > 0  # a ratio to vanilla
    assert "rho1 offline reference pass" in out


def test_cascade_bench_reports_both_ratios(capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["cascade.py", "--prompts", "4", "--batch-size", "2", "--new-tokens", "8",
                                      "--bio-tokens", "24", "--rate", "0.3"])
    runpy.run_path("bench/cascade.py", run_name="__main__")
    out = capsys.readouterr().out
    assert "0% calls: HF generate" in out and "(goal >= 0.8)" in out
    assert "same text: True" in out  # the partner's cache changes the cost, never the text


def test_objective_bench_compares_the_same_gradient(capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["objective.py", "--batch-size", "2", "--block-size", "8", "--vocab", "11",
                                      "--repeats", "1"])
    runpy.run_path("bench/objective.py", run_name="__main__")
    out = capsys.readouterr().out
    assert "autograd: " in out and "lacy: " in out and "speed-up " in out
    assert float(out.rsplit("largest gradient difference ", 1)[1]) < 1e-6
