import os
from pathlib import Path

import numpy as np
import pytest

from lacy.errors import UsageError

from lacy.data.annotation import Annotator, annotate_split
from lacy.data.datamodule import CorpusDataModule


class WordLength(Annotator):
    """A cheap deterministic annotator: characters per subword. Counts calls, can be told to die."""

    name, dtype, chunk_docs = "length", np.float32, 10

    def __init__(self, die_after: int | None = None):
        self.calls, self.die_after = 0, die_after

    def fingerprint(self):
        return "v1"

    def annotate(self, texts, offsets):
        if self.die_after is not None and self.calls >= self.die_after:
            raise KeyboardInterrupt("killed")
        self.calls += 1
        return [(off[:, 1] - off[:, 0]).astype(np.float32) for off in offsets]


@pytest.fixture
def root(data_kwargs):
    dm = CorpusDataModule(**data_kwargs)
    return dm.prepare()


def test_values_align_with_tokens_and_eos_is_zero(root):
    from lacy.data.store import TokenizedSplit

    arr = annotate_split(WordLength(), root, "train", progress=False)
    split = TokenizedSplit(root / "train")
    assert arr.shape == split.ids.shape
    assert np.array_equal(arr, (split.offsets[:, 1] - split.offsets[:, 0]).astype(np.float32))


def test_killed_run_resumes_without_redoing_chunks(root):
    with pytest.raises(KeyboardInterrupt):
        annotate_split(WordLength(die_after=3), root, "train", progress=False)
    again = WordLength()
    arr = annotate_split(again, root, "train", progress=False)
    n_chunks = -(-108 // 10)  # 108 training documents
    assert again.calls == n_chunks - 3
    assert np.array_equal(arr, annotate_split(WordLength(), root, "train", progress=False))  # cached now


def test_shards_split_the_work_and_assemble_the_same_array(root, data_kwargs, tmp_path):
    whole = annotate_split(WordLength(), CorpusDataModule(**dict(data_kwargs, cache_dir=str(tmp_path / "b"))).prepare(),
                           "train", progress=False)
    s0, s1 = WordLength(), WordLength()
    assert annotate_split(s0, root, "train", shard=0, num_shards=2, progress=False) is None  # shard 1 pending
    merged = annotate_split(s1, root, "train", shard=1, num_shards=2, progress=False)
    assert (s0.calls, s1.calls) == (6, 5)
    assert np.array_equal(merged, whole)


def test_datamodule_carries_annotations_into_batches(data_kwargs):
    dm = CorpusDataModule(**dict(data_kwargs, annotators=[WordLength()]))
    dm.setup()
    ds = dm.dataset("train")
    item = ds[3]
    split = dm.splits["train"]
    s = 3 * dm.block_size + 1
    expect = split.offsets[s:s + dm.block_size]
    assert item["length"].tolist() == (expect[:, 1] - expect[:, 0]).astype(np.float32).tolist()


def test_annotate_command_shards_and_prepare_only(tmp_path, bios_path, capsys):
    import yaml

    from experiments.runner import read_config
    from lacy.annotate import main

    config = read_config("configs/lacy.yaml")
    config["data"].update(corpus={"class_path": "lacy.data.corpus.JsonlCorpus", "init_args": {"path": str(bios_path)}},
                          bpe_vocab_size=300, block_size=32, val_fraction=0.1, cache_dir=str(tmp_path / "cache"))
    config["data"]["annotators"][0]["init_args"].update(n_process=1, chunk_docs=50)
    config["model"]["preset"] = "micro"
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    main(["--config", str(path), "--prepare-only"])
    assert "tokenized corpus" in capsys.readouterr().out and not list((tmp_path / "cache").glob("*/side"))
    main(["--config", str(path), "--shard", "1", "--num-shards", "2"])
    out = capsys.readouterr().out
    assert "fact train: shard done; other shards pending" in out  # 108 documents = chunks 0, 1, 2; shard 1 did 1
    main(["--config", str(path), "--shard", "0", "--num-shards", "2"])
    assert "fact train: complete" in capsys.readouterr().out
    with pytest.raises(UsageError, match="--shard 2 must be in"):
        main(["--config", str(path), "--shard", "2", "--num-shards", "2"])


def test_annotate_command_merges_overlays_like_the_cli(tmp_path, capsys):
    """Strategy config + world overlay + oracle overlay: the same data section main.py resolves (the CLI's own
    parser: a changed class_path replaces the object, init_args of the same class merge, lists replace)."""
    from lacy.annotate import main
    from lacy.cli import data_from_configs

    data = data_from_configs(["configs/lacy.yaml", "configs/world/slm.yaml"])
    assert type(data.corpus).__name__ == "ClosedWorld" and data.corpus.n_people == 300  # class replaced
    assert [type(a).__name__ for a in data.annotators] == ["SpacyFactAnnotator"] and data.block_size == 256
    topic = tmp_path / "topic.yaml"
    topic.write_text("data:\n  corpus:\n    init_args:\n      topic: People\n")
    assert data_from_configs(["configs/lacy.yaml", str(topic)]).corpus.topic == "People"  # same class: merged
    small = tmp_path / "small.yaml"
    small.write_text(f"data:\n  corpus:\n    init_args:\n      people: 12\n      val_docs: 4\n"
                     f"  cache_dir: {tmp_path / 'cache'}\n")
    main(["--config", "configs/llm_judge.yaml", "--config", "configs/world/slm.yaml", "--config",
          "configs/world/kb_oracle.yaml", "--config", str(small)])
    out = capsys.readouterr().out
    assert "judge train: complete" in out and "judge val: complete" in out


@pytest.mark.slow
def test_data_does_not_import_the_annotate_command_and_the_command_runs_cleanly():
    """The dependency goes one way (lacy.annotate -> lacy.data.datamodule): no import circle, and `python -m lacy.annotate`
    is not half-imported before it runs (runpy's 'found in sys.modules' warning)."""
    import subprocess
    import sys

    code = "import sys, lacy.data.datamodule, lacy.annotators.spacy_facts, baselines; print('lacy.annotate' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"
    run = subprocess.run([sys.executable, "-W", "error::RuntimeWarning", "-m", "lacy.annotate", "--help"],
                         capture_output=True, text=True)
    assert run.returncode == 0 and "--num-shards" in run.stdout and "RuntimeWarning" not in run.stderr


def _children(pid: int) -> set[int]:
    """Live (not zombie) processes whose parent is ``pid``, read from /proc."""
    out = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended while we read
            continue
        if fields[0] != "Z" and int(fields[1]) == pid:
            out.add(int(stat.parent.name))
    return out


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from /proc")
def test_killed_annotate_command_leaves_no_spacy_workers(tmp_path):
    """`kill -9` of `python -m lacy.annotate` with spaCy's n_process: 2: its worker processes end too."""
    import json
    import signal
    import subprocess
    import sys
    import time

    import yaml

    from experiments.runner import read_config
    from tests.helpers import alive, make_bios

    bios = tmp_path / "bios.jsonl"  # enough text to keep two spaCy workers busy for a while
    bios.write_text("\n".join(json.dumps({"text": " ".join(make_bios(8, seed=i))}) for i in range(400)) + "\n")
    config = read_config("configs/lacy.yaml")
    config["data"].update(corpus={"class_path": "lacy.data.corpus.JsonlCorpus", "init_args": {"path": str(bios)}},
                          bpe_vocab_size=300, block_size=32, val_fraction=0.1, cache_dir=str(tmp_path / "cache"))
    config["data"]["annotators"][0]["init_args"].update(n_process=2, batch_size=4)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    log = open(tmp_path / "log.txt", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "lacy.annotate", "--config", str(path)], stdout=log, stderr=log,
                            cwd=Path(__file__).parents[1])
    try:
        deadline, workers = time.monotonic() + 120, set()
        while len(workers) < 2 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
            workers = _children(proc.pid)
        assert len(workers) >= 2, (tmp_path / "log.txt").read_text()[-2000:]
        proc.send_signal(signal.SIGKILL)  # at once: a worker that has not seen a document yet must end too
        proc.wait()
        deadline = time.monotonic() + 20
        while any(map(alive, workers)) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = [w for w in workers if alive(w)]
        for w in left:  # clean up after a failing run
            os.kill(w, signal.SIGKILL)
        assert not left, f"worker processes {left} outlived their killed parent"
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()


@pytest.mark.slow
def test_a_corpus_document_over_spacys_limit_annotates(tmp_path):
    """A 1.1M-character document (spaCy's max_length is 1M) goes through tokenizing and the runner; its flags
    are the keyword rule's, in both of its spaCy pieces (keywords only: spaCy's tokenizer, seconds)."""
    import json
    import re

    from lacy.data.corpus import JsonlCorpus
    from lacy.data.store import TokenizedSplit
    from lacy.annotators.spacy_facts import SpacyFactAnnotator
    from tests.helpers import make_bios

    filler = "The cat sat on the mat and looked at the garden for a while. " * 200
    long_doc = "She was a physicist.\n\n" + "\n\n".join([filler] * 90) + "\n\nHe was a chemist."
    assert len(long_doc) > 1_000_000
    path = tmp_path / "corpus.jsonl"
    path.write_text("\n".join(json.dumps({"text": d}) for d in [long_doc] + make_bios(30)) + "\n")
    root = CorpusDataModule(corpus=JsonlCorpus(str(path)), bpe_vocab_size=300, block_size=32, batch_size=4,
                            val_fraction=0.1, cache_dir=str(tmp_path / "cache")).prepare()
    ann = SpacyFactAnnotator(entity_labels=[], pos_tags=[], relation_nouns=False, coordinated_values=False,
                             title_words=False)
    for split in ("train", "val"):
        arr, data = annotate_split(ann, root, split, progress=False), TokenizedSplit(root / split)
        for d in range(data.n_docs):
            text = data.texts(range(d, d + 1))[0]
            if text == long_doc:
                s = data.doc_slice(d)
                chars = {i for (a, b), f in zip(data.offsets[s], arr[s]) if f for i in range(a, b)}
                assert [m.group() for m in re.finditer(r"\w+", text) if m.start() in chars] == ["physicist", "chemist"]
                return
    pytest.fail("the long document is in neither split")


def test_two_processes_on_one_cache_share_the_chunks(root, tmp_path):
    """Issue 28: two annotators started on one cache both computed every chunk. Each chunk is claimed (an flock
    a dead process drops), so two processes each compute part of them, none twice, and the array is the one a
    single process writes."""
    import subprocess
    import sys
    import time

    code = ("import sys, time, numpy as np; from pathlib import Path; sys.path.insert(0, '.')\n"
            "from tests.test_annotate import WordLength; from lacy.data.annotation import annotate_split\n"
            "class Slow(WordLength):\n"
            "    def annotate(self, texts, offsets):\n"
            "        open(sys.argv[2], 'a').write(f'{texts[0][:20]!r}\\n'); time.sleep(0.3)\n"
            "        return super().annotate(texts, offsets)\n"
            "time.sleep(max(0, float(sys.argv[3]) - time.time()))\n"
            "annotate_split(Slow(), Path(sys.argv[1]), 'train', progress=False)\n")
    start = time.time() + 8  # both imported, then both start at once
    logs = [tmp_path / f"p{i}.log" for i in range(2)]
    procs = [subprocess.Popen([sys.executable, "-c", code, str(root), str(log), str(start)]) for log in logs]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    done = [log.read_text().splitlines() if log.exists() else [] for log in logs]
    n_chunks = -(-108 // 10)
    assert len(done[0]) + len(done[1]) == n_chunks and min(map(len, done)) >= 2  # shared, none twice
    single = annotate_split(WordLength(), root, "train", progress=False)  # the assembled file, read back
    fresh = root.parent / "fresh"
    import shutil
    shutil.copytree(root, fresh, ignore=shutil.ignore_patterns("side"))
    assert np.array_equal(single, annotate_split(WordLength(), fresh, "train", progress=False))


def test_cache_folders_and_side_arrays_follow_the_umask(data_kwargs, tmp_path):
    """Issue 29: cache folders were 0700 and side arrays 0600 under umask 022 (mkdtemp / mkstemp modes): another
    user of a shared cache could not read them. Every folder and file lacy writes there follows the umask."""
    import stat

    old = os.umask(0o022)
    try:
        dm = CorpusDataModule(**dict(data_kwargs, cache_dir=str(tmp_path / "shared")))
        root = dm.prepare()
        annotate_split(WordLength(), root, "train", progress=False)
    finally:
        os.umask(old)
    modes = {str(p.relative_to(tmp_path)): stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "shared").rglob("*")}
    assert modes and all(m == (0o755 if (tmp_path / p).is_dir() else 0o644) for p, m in modes.items()), modes
