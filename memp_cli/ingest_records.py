"""What an ingest is asked to do (IngestOptions) and what it did (IngestReport)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from . import formats
from .embed import DEFAULT_EMBED_MODEL
from .judge import Judge
from .scopes import DEFAULT as DEFAULT_SCOPE


@dataclass
class IngestOptions:
    """How to read, judge, filter and build."""

    build: str = "proceduralization"
    model: str | None = None
    embed_model: str | None = None
    fmt: str = "auto"
    read: formats.ReadOptions = field(default_factory=formats.ReadOptions)
    outcomes_files: list[str] = field(default_factory=list)
    redact: bool = True
    redact_patterns: list[str] = field(default_factory=list)
    judge: Judge | None = None
    keep_best: int | None = None
    scope: str | None = None  # the scope new memories go in: else $MEMP_SCOPE, else 'default'
    # Model calls at once (--jobs, else $MEMP_JOBS, else memp_cli.pool.DEFAULT_JOBS); the offline distiller needs none.
    jobs: int | None = None


@dataclass
class IngestReport:
    """What an ingest did."""

    files: int = 0
    read: int = 0
    added: int = 0
    skipped: int = 0
    dropped: int = 0
    judged: int = 0
    redacted: int = 0
    offline_scripts: int = 0
    held: int = 0
    contrasted: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    model: str | None = None
    embed_model: str = DEFAULT_EMBED_MODEL
    scope: str = DEFAULT_SCOPE
    # Trajectories skipped because they are stored already in another scope (a run is stored once): scope -> count.
    other_scopes: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        """Return the report as a JSON-ready dict."""
        return asdict(self)
