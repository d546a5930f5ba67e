"""A job spec from ``tidal submit``'s flags and an optional YAML file (``-f job.yaml``).

The YAML file holds the same fields as the JSON spec (``name``, ``tier``, ``world``,
``min_devices``, ``command``, ``env``, ``checkpoint: {every_steps, every_s, keep}``, ...);
flags given on the command line override it, and the command after ``--`` replaces its
``command``. Both become one :class:`tidal.control.models.JobSubmission`. A ``command``
written as one string in YAML is split as a shell would (no expansion); a relative
``workdir`` is taken from the current directory, which is also the default.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tidal.control.models import JobSubmission

__all__ = ["SpecInputError", "build_submission"]

_CHECKPOINT_FLAGS = {
    "checkpoint_every_steps": "every_steps",
    "checkpoint_every_s": "every_s",
    "checkpoint_keep": "keep",
}


class SpecInputError(ValueError):
    """The flags or the YAML file do not make a valid job spec; says which field."""


def _load_yaml(path: Path) -> dict[str, Any]:
    import yaml

    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SpecInputError(f"cannot read job file {str(path)!r}: {exc.strerror}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise SpecInputError(f"job file {str(path)!r} is not valid YAML: {exc}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise SpecInputError(f"job file {str(path)!r} must hold a mapping of fields")
    return loaded


def _parse_env(pairs: Sequence[str]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise SpecInputError(f"--env {pair!r}: expected NAME=VALUE")
        env[name] = value
    return env


def build_submission(
    *,
    file: Path | None,
    flags: dict[str, Any],
    command: Sequence[str],
    env: Sequence[str],
    cwd: Path,
) -> JobSubmission:
    """Merge the YAML file, the flags (``None``: not given) and the command into a spec."""
    from pydantic import ValidationError

    from tidal.control.models import JobSubmission

    data = _load_yaml(file) if file is not None else {}
    if isinstance(data.get("command"), str):
        data["command"] = shlex.split(data["command"])
    for key, value in flags.items():
        if value is None:
            continue
        if key in _CHECKPOINT_FLAGS:
            checkpoint = data.setdefault("checkpoint", {})
            if not isinstance(checkpoint, dict):
                raise SpecInputError("checkpoint: must be a mapping")
            checkpoint[_CHECKPOINT_FLAGS[key]] = value
        else:
            data[key] = value
    if command:
        data["command"] = list(command)
    if env:
        merged = data.get("env") or {}
        if not isinstance(merged, dict):
            raise SpecInputError("env: must be a mapping of NAME: VALUE")
        data["env"] = {**merged, **_parse_env(env)}
    workdir = data.get("workdir")
    data["workdir"] = (
        str(cwd / Path(workdir).expanduser()) if isinstance(workdir, str) else str(cwd)
    )
    if "command" not in data:
        raise SpecInputError("command: give the command after `--` (or `command:` in -f FILE)")
    try:
        return JobSubmission.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'spec'}: "
            + err["msg"].removeprefix("Value error, ")
            for err in exc.errors()
        )
        raise SpecInputError(f"invalid job spec: {problems}") from None
