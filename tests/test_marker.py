"""lacy.io.marker: lacy replaces only what it wrote. Single outputs in a shared folder, the cache folder, an
export's own measurements, the judge's sqlite cache; two writers in one folder keep both records."""
import hashlib
import json
import multiprocessing
import sqlite3

import pytest

from lacy.errors import UsageError
from lacy.io.marker import (CACHE, MARKER, OUTPUTS, check_output, check_replaceable, own_cache, read_marker,
                            write_marker, write_output)


def test_an_output_is_replaced_only_while_it_is_as_lacy_wrote_it(tmp_path):
    out = tmp_path / "kb_eval.json"
    write_output(out, '{"a": 1}', "out")
    write_output(out, '{"a": 2}', "out")  # lacy's own, unchanged: replaced
    assert json.loads(out.read_text()) == {"a": 2}
    assert read_marker(tmp_path, OUTPUTS)["files"] == {"kb_eval.json"}
    out.write_text('{"a": 2, "my note": true}')  # the user edits it
    with pytest.raises(UsageError, match="kb_eval.json: changed after lacy wrote it.*set out to another path"):
        write_output(out, '{"a": 3}', "out")
    assert "my note" in out.read_text()


def test_a_users_file_is_never_replaced_and_the_check_comes_first(tmp_path):
    mine = tmp_path / "wiki_eval.json"
    mine.write_text("my own results")
    with pytest.raises(UsageError, match=r"wiki_eval.json: exists and was not written by lacy.*set KB out to"):
        check_output(mine, "KB out")
    with pytest.raises(UsageError, match="not written by lacy"):
        write_output(mine, "{}", "KB out")
    assert mine.read_text() == "my own results" and not (tmp_path / OUTPUTS).exists()
    # a link to a file lacy wrote is not lacy's file
    write_output(tmp_path / "lacy.json", "{}", "out")
    (tmp_path / "link.json").symlink_to(tmp_path / "lacy.json")
    with pytest.raises(UsageError, match="link.json: exists and was not written by lacy"):
        check_output(tmp_path / "link.json", "out")


def test_a_write_killed_before_its_record_is_still_lacys(tmp_path):
    """The digest is recorded as pending before the write: a kill between the write and the final record leaves
    a file the next run replaces; a killed export-folder write leaves a temporary sibling that is not foreign."""
    from lacy.io.atomic import write_atomic
    from lacy.io.marker import _record

    out = tmp_path / "kb_eval.json"
    write_output(out, "{}", "out")
    _record(out, OUTPUTS, hashlib.sha256(b'{"new": 1}').hexdigest(), pending=True)
    write_atomic(out, '{"new": 1}')  # killed here: the final record never came
    check_output(out, "out")
    write_output(out, '{"newer": 1}', "out")
    assert read_marker(tmp_path, OUTPUTS)["pending"] == {}
    export = tmp_path / "hf"
    export.mkdir()
    (export / "config.json").write_text("{}")
    write_marker(export, ["config.json"])
    _record(export / "partner_eval.json", MARKER, hashlib.sha256(b"{}").hexdigest(), pending=True)
    (export / ".partner_eval.json-ab12cd34").write_text("{")  # the write killed after its pending record
    check_replaceable(export)
    (export / ".notes-ab12cd34").write_text("mine")
    with pytest.raises(UsageError, match="holds files lacy did not write"):
        check_replaceable(export)


def test_a_users_file_named_like_the_record_is_never_replaced(tmp_path):
    (tmp_path / OUTPUTS).write_text("my list of outputs")
    with pytest.raises(UsageError, match="lacy_outputs.json: a file lacy did not write"):
        write_output(tmp_path / "kb_eval.json", "{}", "out")
    assert (tmp_path / OUTPUTS).read_text() == "my list of outputs" and not (tmp_path / "kb_eval.json").exists()


def _write_many(folder, tag, n):
    for i in range(n):
        write_output(folder / f"{tag}{i}.json", "{}", "out")


def test_two_processes_recording_outputs_in_one_folder_keep_every_record(tmp_path):
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_write_many, args=(tmp_path, tag, 25)) for tag in "ab"]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    assert [p.exitcode for p in procs] == [0, 0]
    assert read_marker(tmp_path, OUTPUTS)["files"] == {f"{t}{i}.json" for t in "ab" for i in range(25)}


def test_a_measurement_kept_in_an_export_is_recorded_in_its_marker(tmp_path):
    export = tmp_path / "hf"
    export.mkdir()
    (export / "config.json").write_text("{}")
    write_marker(export, ["config.json"])
    write_output(export / "partner_eval.json", "{}", "partner")
    assert read_marker(export)["files"] == {"config.json", "partner_eval.json"}
    assert not (export / OUTPUTS).exists()
    check_replaceable(export)  # still lacy's folder: a new export may replace it
    (export / "partner_eval.json").write_text('{"edited": 1}')
    with pytest.raises(UsageError, match="partner_eval.json changed after lacy wrote it"):
        check_replaceable(export)


def test_the_cache_folder_is_lacys_or_refused(tmp_path):
    fresh = own_cache(tmp_path / "new")
    assert (fresh / CACHE).is_file()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert (own_cache(empty) / CACHE).is_file()
    old = tmp_path / "old"  # an earlier lacy's cache: only names lacy gives
    (old / "0123456789abcdef" / "train").mkdir(parents=True)
    (old / "digests.jsonl").write_text("")
    (old / ".0123456789abcdef-x1y2z3w4").mkdir()  # a killed build's temporary sibling
    assert (own_cache(old) / CACHE).is_file()
    home = tmp_path / "home"
    home.mkdir()
    (home / "thesis.tex").write_text("mine")
    with pytest.raises(UsageError, match=r"data.cache_dir=.*home: holds files lacy did not write \(thesis.tex\)"):
        own_cache(home)
    assert sorted(p.name for p in home.iterdir()) == ["thesis.tex"]
    lookalike = tmp_path / "lookalike"  # names lacy gives, contents it never wrote: the user's
    for name, make in (("contacts.sqlite", lambda f: sqlite3.connect(f).execute("CREATE TABLE people (n TEXT)")),
                       ("digests.jsonl", lambda f: f.write_text("my own log line\n")),
                       ("models", lambda f: (f.mkdir(), (f / "mine.bin").write_text("weights")))):
        folder = lookalike / name.split(".")[0]
        folder.mkdir(parents=True)
        make(folder / name)
        with pytest.raises(UsageError, match=f"holds files lacy did not write \\({name}\\)"):
            own_cache(folder)
        assert not (folder / CACHE).exists()
    judged = tmp_path / "judged"  # an earlier lacy's cache with the judge's answers and the memo
    judged.mkdir()
    db = sqlite3.connect(judged / "judge.sqlite")
    db.execute("CREATE TABLE answers (key TEXT PRIMARY KEY, answer TEXT NOT NULL)")
    db.commit()
    db.close()
    (judged / "digests.jsonl").write_text('{"key": "k", "digest": "d", "docs": 3}\n')
    assert (own_cache(judged) / CACHE).is_file()
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    (repo / "models").mkdir()
    with pytest.raises(UsageError, match=r"holds files lacy did not write \(.git\)"):
        own_cache(repo)
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match="exists and is not a folder"):
        own_cache(tmp_path / "file")


def test_the_data_module_refuses_a_users_folder_as_cache_before_writing(data_kwargs, tmp_path):
    from lacy.data.datamodule import CorpusDataModule

    home = tmp_path / "docs"
    home.mkdir()
    (home / "notes.txt").write_text("mine")
    dm = CorpusDataModule(**{**data_kwargs, "cache_dir": str(home)})
    with pytest.raises(UsageError, match="data.cache_dir=.*docs: holds files lacy did not write \\(notes.txt\\)"):
        dm.prepare()
    assert [p.name for p in home.iterdir()] == ["notes.txt"]


def test_the_judge_cache_is_never_another_database(tmp_path):
    from baselines.llm_judge import OpenAIJudge

    other = tmp_path / "app.sqlite"
    db = sqlite3.connect(other)
    db.execute("CREATE TABLE people (name TEXT)")
    db.commit()
    db.close()
    before = other.read_bytes()
    with pytest.raises(UsageError, match="app.sqlite: an sqlite database lacy did not write \\(tables people\\)"):
        OpenAIJudge("http://127.0.0.1:9", "m", cache=str(other))._db()
    assert other.read_bytes() == before
    text = tmp_path / "notes.txt"
    text.write_text("not a database at all, just some notes " * 20)
    with pytest.raises(UsageError, match="notes.txt: not a judge cache"):
        OpenAIJudge("http://127.0.0.1:9", "m", cache=str(text))._db()
    assert text.read_text().startswith("not a database")
    own = OpenAIJudge("http://127.0.0.1:9", "m", cache=str(tmp_path / "judge.sqlite"))
    own._db().close()
    own._db().close()  # lacy's own cache opens again


def test_evaluation_reports_are_checked_at_setup_before_the_test_loop(tmp_path):
    """KBEvaluation / WikiEvaluation / NLUEvaluation refuse, at setup, an out (or a sibling: bios, plot) that is
    a user's file; the report writer records what it wrote, so the same run's re-test replaces it."""
    from types import SimpleNamespace

    from lacy.eval.kb_eval import KBEvaluation
    from lacy.eval.nlu import NLUEvaluation
    from lacy.eval.report import check_outputs
    from lacy.eval.wiki_eval import WikiEvaluation

    trainer = SimpleNamespace(log_dir=str(tmp_path))
    (tmp_path / "kb_eval_bios.json").write_text("my bios")
    with pytest.raises(UsageError, match="kb_eval_bios.json: exists and was not written by lacy"):
        KBEvaluation(world="tests/data/second_world", partner=None).setup(trainer, None, "test")
    (tmp_path / "wiki.json").write_text("mine")
    with pytest.raises(UsageError, match=r"wiki.json: exists and was not written by lacy.*out \(wiki.json\)"):
        WikiEvaluation(out="wiki.json").setup(trainer, None, "test")
    (tmp_path / "nlu.json").write_text("mine")
    with pytest.raises(UsageError, match="nlu.json: exists and was not written by lacy"):
        NLUEvaluation().setup(trainer, None, "test")
    write_output(tmp_path / "mine.json", "{}", "out")
    check_outputs(trainer, "mine.json", ("_bios.json",))  # lacy's own and an absent sibling: fine


def test_a_report_and_its_plot_are_replaced_by_the_next_test_of_the_run(tmp_path, capsys):
    from types import SimpleNamespace

    from lacy.eval.report import check_outputs, plot_sweep, report

    trainer = SimpleNamespace(log_dir=str(tmp_path), is_global_zero=True)
    module = SimpleNamespace(log=lambda *a, **k: None)
    res = {"trained_budget@0.1": {"factscore": 0.5, "call_rate": 0.1}, "trained_budget": {"factscore": 0.6,
                                                                                      "call_rate": 0.22}}
    for _ in range(2):
        check_outputs(trainer, "kb_eval.json", (".png",))  # what KBEvaluation.setup checks
        path = report(trainer, module, res, "world", "kb_eval.json", ["factscore"])
        plot_sweep(res, path.with_suffix(".png"))
    assert json.loads(path.read_text()) == res and path.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
    assert read_marker(tmp_path, OUTPUTS)["files"] == {"kb_eval.json", "kb_eval.png"}
    path.with_suffix(".png").write_bytes(b"my own figure")
    with pytest.raises(UsageError, match="kb_eval.png: changed after lacy wrote it"):
        check_outputs(trainer, "kb_eval.json", (".png",))


def test_the_partners_own_scores_are_kept_only_in_a_lacy_export(tmp_path):
    from lacy.data.tokenizer import train_bpe
    from lacy.eval.kb_metrics import partner_alone
    from lacy.io.export import export_hf, tokenizer_files
    from lacy.model.gpt2 import build_slm
    from lacy.worlds.closed_world import ClosedWorld

    world = ClosedWorld(people=6, rounds=1, seed=0)
    tok = train_bpe(world.bpe_documents(), 400)
    model = build_slm("micro", len(tok), 128).eval()
    prompts, probes = world.prompts()[:2], world.kb().probes()[:2]
    mine = tmp_path / "mine"
    model.save_pretrained(mine)
    before = sorted(p.name for p in mine.iterdir())
    partner_alone(str(mine), model, tok, world.kb(), prompts, probes, max_new_tokens=4)
    assert sorted(p.name for p in mine.iterdir()) == before  # a user's folder: nothing written
    export = export_hf(model, tokenizer_files(tok), tmp_path / "hf", call=False)
    partner_alone(str(export), model, tok, world.kb(), prompts, probes, max_new_tokens=4, keep=False)
    assert not (export / "partner_eval.json").exists()  # another DDP rank: measured, not written
    first = partner_alone(str(export), model, tok, world.kb(), prompts, probes, max_new_tokens=4)
    assert "partner_eval.json" in read_marker(export)["files"]
    check_replaceable(export)  # still a replaceable lacy export
    assert partner_alone(str(export), model, tok, world.kb(), prompts, probes, max_new_tokens=4) == first
    (export / "partner_eval.json").write_text("my notes, not JSON")  # not lacy's any more: measured, kept
    assert partner_alone(str(export), model, tok, world.kb(), prompts, probes, max_new_tokens=4) == first
    assert (export / "partner_eval.json").read_text() == "my notes, not JSON"
