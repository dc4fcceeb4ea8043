"""Prints constraints.txt: the installed version of everything `tunefleet[test]` depends on,
directly or not (torch and its CUDA wheels left out: their build depends on the machine).

    python3 bench/lock.py > constraints.txt     # after an upgrade that passes the suite
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, distribution

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

HEADER = """\
# The versions tunefleet is tested with (CI installs exactly these: .ci/run). torch is pinned on its own,
# first (pip install torch==2.13.0): its build depends on the machine (CPU or CUDA).
# Regenerate after an upgrade that passes the suite: python3 bench/lock.py > constraints.txt"""


def closure(name: str, extras: tuple = ()) -> dict[str, tuple[str, str]]:
    """{canonical name: (name, version)} of the installed distribution and all it requires."""
    seen: dict[str, tuple[str, str, set]] = {}

    def visit(name: str, extras) -> None:
        key = canonicalize_name(name)
        try:
            dist = distribution(name)
        except PackageNotFoundError:  # a requirement for another platform or Python
            return
        known = seen.get(key)
        if known is not None and set(extras) <= known[2]:
            return
        seen[key] = (dist.metadata["Name"], dist.version, (known[2] if known else set()) | set(extras))
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in ("", *seen[key][2])):
                visit(req.name, tuple(req.extras))

    visit(name, extras)
    return {k: (n, v) for k, (n, v, _) in seen.items()}


def main() -> None:
    print(HEADER)
    for key, (name, version) in sorted(closure("tunefleet", ("test",)).items()):
        if key not in ("tunefleet", "torch", "triton") and not key.startswith("nvidia-"):
            print(f"{name}=={version}")


if __name__ == "__main__":
    main()
