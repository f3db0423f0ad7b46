"""Exceptions raised when a model is refused, or cannot be loaded or converted."""

from __future__ import annotations

import pickle

from picklewarden.model import FileReport, Verdict


class UnsafeModelError(Exception):
    """The scan did not clear the file, so nothing was loaded or written. ``report`` says why."""

    def __init__(self, report: FileReport, reason: str) -> None:
        super().__init__(f"{report.path}: refused ({report.verdict.label}): {reason}")
        self.report = report
        self.reason = reason

    @property
    def verdict(self) -> Verdict:
        return self.report.verdict


class ConvertError(Exception):
    """The file (or part of it that conversion needs) cannot be turned into safetensors."""


class RestrictedLoadError(pickle.UnpicklingError):
    """torch's restricted unpickler could not rebuild a file the scan allowed.

    A subclass of :class:`pickle.UnpicklingError`, which is what ``torch.load`` raises for the same
    failure, so existing handlers keep working. picklewarden never retries without the restriction.
    """


class TorchNotInstalledError(ImportError):
    """``picklewarden.load`` needs torch: ``pip install 'picklewarden[torch]'``."""
