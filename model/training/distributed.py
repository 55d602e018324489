"""Many runs over many GPUs and machines, started by torchrun (torch.distributed), not a
home-made launcher.

    torchrun --nproc-per-node 8 train.py --runs 200 --json runs.jsonl
    torchrun --nnodes 2 --node-rank R --nproc-per-node 8 --rdzv-backend c10d \\
             --rdzv-endpoint HOST:29500 train.py --sweep sweep.toml --json sweep.jsonl

Each rank trains whole runs on its own GPU (cuda:LOCAL_RANK); there is no gradient all-reduce.
The only communication is one gather of the records on rank 0 at the end (and a barrier), over
gloo: the records are small Python objects, and gloo's timeout can be set long enough for ranks
that finish hours apart. While running, each rank appends its records to PATH.rank<r>, so that
a failure or Ctrl-C loses nothing already measured; after the gather rank 0 writes them all to
PATH and the partial files are removed.
"""
from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from datetime import timedelta

import torch

from ..cli import SessionError

GATHER_TIMEOUT = timedelta(days=2)  # ranks may finish far apart: rank 0 waits in the gather


@dataclass
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @classmethod
    def single(cls) -> "World":
        return cls()

    @classmethod
    def from_env(cls) -> "World":
        """The torchrun job this process belongs to (RANK, WORLD_SIZE, LOCAL_RANK), its process
        group initialised; a one-process World when not started by torchrun."""
        size = int(os.environ.get("WORLD_SIZE", "1"))
        if size <= 1:
            return cls.single()
        import torch.distributed as dist
        world = cls(int(os.environ["RANK"]), size, int(os.environ.get("LOCAL_RANK", "0")))
        if not dist.is_initialized():
            dist.init_process_group("gloo", timeout=GATHER_TIMEOUT)
        # torchrun stops the workers with SIGTERM (Ctrl-C reaches the agent): let them stop as
        # a Ctrl-C would, keeping what was written
        signal.signal(signal.SIGTERM, _interrupt)
        return world

    def device(self, asked: str | None) -> str | None:
        """Each rank's GPU: cuda:LOCAL_RANK when the flags say cuda (or nothing, on a GPU machine)."""
        if self.size == 1:
            return asked
        if (asked is None and torch.cuda.is_available()) or asked == "cuda":
            n = torch.cuda.device_count()
            if self.local_rank >= n:
                raise SessionError(f"LOCAL_RANK {self.local_rank} but this machine has {n} GPU(s): "
                                   f"use --nproc-per-node {n} or less")
            torch.cuda.set_device(self.local_rank)
            return f"cuda:{self.local_rank}"
        return asked

    def gather(self, records: list) -> list:
        """Every rank's records on rank 0 (an empty list elsewhere)."""
        if self.size == 1:
            return list(records)
        import torch.distributed as dist
        out = [None] * self.size if self.rank == 0 else None
        dist.gather_object(records, out, dst=0)
        return [r for part in out for r in part] if self.rank == 0 else []

    def barrier(self) -> None:
        if self.size > 1:
            import torch.distributed as dist
            dist.barrier()

    def close(self) -> None:
        if self.size > 1:
            import torch.distributed as dist
            if dist.is_initialized():
                dist.destroy_process_group()


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def partial_path(path: str, rank) -> str:
    return f"{path}.rank{rank}"


def remove_partial(path: str, rank: int) -> None:
    try:
        os.remove(partial_path(path, rank))
    except FileNotFoundError:
        pass
