"""TorchScript modules for the container tests (``torch.jit.script`` needs their source in a real file)."""

from __future__ import annotations

import torch


class FileWriter(torch.nn.Module):
    """A scripted ``__setstate__`` that calls torch.save: ``torch.jit.load`` writes a file of its choosing."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
        self.weight = torch.zeros(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.weight

    @torch.jit.export
    def __getstate__(self) -> tuple[str, torch.Tensor, bool]:
        return (self.path, self.weight, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[str, torch.Tensor, bool]) -> None:
        self.path = state[0]
        self.weight = state[1]
        self.training = state[2]
        torch.save(self.weight, self.path)


def make_file_writer(path: str) -> torch.nn.Module:
    return FileWriter(path)
