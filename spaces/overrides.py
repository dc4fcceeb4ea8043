"""Reading a --space FILE.yaml (checked against the method's space when the spec is built)."""

from __future__ import annotations

from pathlib import Path

from spaces.errors import InputError


def read_space_file(path: str | None) -> dict:
    if not path:
        return {}
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as e:
        raise InputError(f"space file {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark else ""
        raise InputError(f"space file {path}{where}: not valid YAML") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError(f"space file {path}: expected a mapping of hyperparameter names")
    return _numbers(data)


def _numbers(value):
    """YAML 1.1 reads 1e-5 (no dot) as a string; people write it that way."""
    if isinstance(value, dict):
        return {k: _numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_numbers(v) for v in value]
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value
