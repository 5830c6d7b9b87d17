"""Where this process stands under torchrun, read from the launcher's environment; torch-free, no side effects."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class World:
    """This process's rank among `size` (a world of one outside torchrun, or for a compare cell trained alone)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls) -> World:
        """What torchrun told this process (RANK, WORLD_SIZE, LOCAL_RANK); a world of one without it."""
        env = os.environ
        return cls(int(env.get("RANK", "0")), int(env.get("WORLD_SIZE", "1")), int(env.get("LOCAL_RANK", "0")))
