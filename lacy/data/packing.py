"""Packed blocks over the token stream, side arrays sliced like the labels, and a sampler that resumes exactly.

Tokens of all documents form one stream (each document followed by EOS). A block is a window of
``block_size + 1`` tokens with stride ``block_size``: inputs are its first ``block_size`` tokens and labels the
last ``block_size``, so every token is a target exactly once. Side arrays (fact flags, reference losses, judge
labels: whatever an annotator writes) are aligned with the stream and sliced like the labels, so
``batch[name][b, t]`` describes the target ``labels[b, t]``.
"""
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from lacy.train.objective import IGNORE_INDEX


class PackedBlocks(Dataset):
    """Fixed-length blocks over a token stream; the last block is padded (labels IGNORE_INDEX)."""

    def __init__(self, ids: np.ndarray, side: dict[str, np.ndarray], block_size: int, pad_id: int):
        self.ids, self.side, self.block_size, self.pad_id = ids, side, block_size, pad_id
        self.n = max(0, -(-(len(ids) - 1) // block_size))

    def __len__(self) -> int:
        return self.n

    def _window(self, arr: np.ndarray, start: int, stop: int, fill) -> torch.Tensor:
        piece = arr[start:stop]
        if len(piece) < self.block_size:
            piece = np.concatenate([piece, np.full(self.block_size - len(piece), fill, dtype=arr.dtype)])
        return torch.from_numpy(np.array(piece))  # a copy: the stream is a read-only memory map

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        s, T = k * self.block_size, self.block_size
        item = {
            "input_ids": self._window(self.ids, s, s + T, self.pad_id).long(),
            "labels": self._window(self.ids, s + 1, s + T + 1, IGNORE_INDEX).long(),
        }
        for name, arr in self.side.items():
            item[name] = self._window(arr, s + 1, s + T + 1, 0)
        return item


class ResumableSampler(Sampler[int]):
    """An endless, reproducible stream of block indices, resumed from the trainer's position.

    Data epoch e visits all blocks in the permutation seeded by (seed, e). Each ``__iter__`` starts at
    ``position()`` (blocks this rank has consumed, derived from the restored ``global_step``), so a
    resumed run sees exactly the batches an uninterrupted run would. Rank r of w takes every w-th block.
    """

    def __init__(self, num_blocks: int, seed: int, position, rank: int = 0, world: int = 1):
        self.num_blocks, self.seed, self.position, self.rank, self.world = num_blocks, seed, position, rank, world

    def __len__(self) -> int:
        return self.num_blocks // self.world

    def _perm(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.num_blocks)

    def __iter__(self):
        start = self.position()
        epoch, perm = -1, None
        for i in range(start, start + len(self)):
            g = i * self.world + self.rank
            if g // self.num_blocks != epoch:
                epoch = g // self.num_blocks
                perm = self._perm(epoch)
            yield int(perm[g % self.num_blocks])


class ResumableDataLoader(DataLoader):
    """Tells Lightning the loader resumes mid-epoch: its position is derived from the restored global_step."""

    def state_dict(self) -> dict:
        return {"position": self.sampler.position()}

    def load_state_dict(self, state: dict) -> None:
        pass  # nothing to restore: position() reads the trainer's restored global_step
