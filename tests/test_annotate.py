import numpy as np
import pytest

from lacy.annotate import Annotator, annotate_split
from lacy.data import CorpusDataModule


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
    from lacy.data import TokenizedSplit

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

    from lacy.annotate import main

    config = yaml.safe_load(open("configs/lacy.yaml"))
    config["data"].update(corpus={"class_path": "lacy.corpus.JsonlCorpus", "init_args": {"path": str(bios_path)}},
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
    with pytest.raises(SystemExit):
        main(["--config", str(path), "--shard", "2", "--num-shards", "2"])


def test_annotate_command_merges_overlays_like_the_cli(tmp_path, capsys):
    """Strategy config + world overlay + oracle overlay: the same data section main.py resolves."""
    from lacy.annotate import _merge, main

    base = {"corpus": {"class_path": "A", "init_args": {"topic": None}}, "block_size": 256,
            "annotators": [{"class_path": "X"}]}
    over = {"corpus": {"class_path": "B", "init_args": {"people": 3}}, "annotators": [{"class_path": "Y"}]}
    assert _merge(base, over) == {"corpus": {"class_path": "B", "init_args": {"people": 3}}, "block_size": 256,
                                  "annotators": [{"class_path": "Y"}]}
    assert _merge(base, {"corpus": {"init_args": {"topic": "People"}}})["corpus"] == {
        "class_path": "A", "init_args": {"topic": "People"}}
    small = tmp_path / "small.yaml"
    small.write_text(f"data:\n  corpus:\n    init_args:\n      people: 12\n      val_docs: 4\n"
                     f"  cache_dir: {tmp_path / 'cache'}\n")
    main(["--config", "configs/llm_judge.yaml", "--config", "configs/world/slm.yaml", "--config",
          "configs/world/kb_oracle.yaml", "--config", str(small)])
    out = capsys.readouterr().out
    assert "judge train: complete" in out and "judge val: complete" in out


def test_data_does_not_import_the_annotate_command_and_the_command_runs_cleanly():
    """The dependency goes one way (lacy.annotate -> lacy.data): no import circle, and `python -m lacy.annotate`
    is not half-imported before it runs (runpy's 'found in sys.modules' warning)."""
    import subprocess
    import sys

    code = "import sys, lacy.data, lacy.facts, baselines; print('lacy.annotate' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"
    run = subprocess.run([sys.executable, "-W", "error::RuntimeWarning", "-m", "lacy.annotate", "--help"],
                         capture_output=True, text=True)
    assert run.returncode == 0 and "--num-shards" in run.stdout and "RuntimeWarning" not in run.stderr
