from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class Verdict:
    """Why a trial was ended: which detector, at which step, on what evidence."""

    detector: str
    step: int
    evidence: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)
