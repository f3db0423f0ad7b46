"""What the operator chose when starting the gateway."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from picklewarden.limits import DEFAULT_LIMITS, Limits
from picklewarden.model import Verdict
from picklewarden.policy.config import Policy


@dataclass(frozen=True)
class GatewayConfig:
    """Everything :func:`picklewarden.server.app.create_app` needs."""

    upstream: str
    """Base URL of the hub proxied, e.g. ``https://huggingface.co`` (no trailing slash needed)."""
    data_dir: Path
    """Holds the file cache (``blobs/``) and, by default, the SQLite result store."""
    db: str | None = None
    """``postgresql://...`` for a store shared by replicas; None for SQLite under :attr:`data_dir`."""
    policy: Policy = field(default_factory=Policy)
    """The scan policy; its ``fail_on`` also decides which verdicts are refused (default: suspicious)."""
    token: str | None = None
    """Bearer token that guards uploads and private results; None disables uploads and hides them."""
    max_upload: int = 1 << 30
    """Largest upload accepted by ``POST /api/v1/scans``, in bytes."""
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    """Seconds without a byte from upstream before the request fails with 504."""
    webhook: str | None = None
    """URL that receives a JSON POST for every new malicious verdict."""

    @property
    def limits(self) -> Limits:
        """The scanner's limits: the defaults with the policy's ``[limits]`` applied."""
        return self.policy.apply_limits(DEFAULT_LIMITS)

    @property
    def upstream_base(self) -> str:
        return self.upstream.rstrip("/")

    def refused(self, verdict: Verdict) -> bool:
        """Whether a file with ``verdict`` is withheld. Not analysed (``error``) is never served as clean."""
        return verdict is Verdict.ERROR or verdict >= self.policy.effective_fail_on
