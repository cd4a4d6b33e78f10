"""The tip-conditioning action table: what each action does and the room it needs.

The default table is DeepSPM's (Krull et al., Commun. Phys. 3, 54 (2020),
https://doi.org/10.1038/s42005-020-0317-3); a lab can load its own from TOML or CSV.
"""

from __future__ import annotations

import csv
import math
import tomllib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from importlib import resources
from pathlib import Path

import numpy as np

KINDS = ("stall", "pulse", "dip")


@dataclass(frozen=True)
class Action:
    """One conditioning action, in the units of the table (nm, V, s)."""

    name: str
    kind: str
    dip_nm: float
    bias_v: float
    duration_s: float
    forbid_radius_nm: float
    require_free_nm: float
    reset: bool

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("action has an empty name")
        if self.kind not in KINDS:
            raise ValueError(f"action {self.name!r}: kind {self.kind!r} is not one of {KINDS}")
        for field in ("dip_nm", "bias_v", "duration_s", "forbid_radius_nm", "require_free_nm"):
            if not math.isfinite(getattr(self, field)):
                raise ValueError(f"action {self.name!r}: {field} is not a finite number")
        for field in ("duration_s", "forbid_radius_nm", "require_free_nm"):
            if getattr(self, field) < 0:
                raise ValueError(f"action {self.name!r}: {field} must not be negative")
        if self.dip_nm > 0:
            raise ValueError(f"action {self.name!r}: dip_nm must be <= 0 (towards the sample)")
        if self.kind == "dip" and self.dip_nm == 0:
            raise ValueError(f"action {self.name!r}: a dip needs a non-zero dip_nm")
        if self.kind == "pulse" and (self.bias_v == 0 or self.dip_nm != 0):
            raise ValueError(f"action {self.name!r}: a pulse needs a non-zero bias_v and "
                             "dip_nm = 0")
        if self.kind == "stall" and self.dip_nm != 0:
            raise ValueError(f"action {self.name!r}: a stall does not dip (dip_nm must be 0)")


class ActionTable(Sequence[Action]):
    """An ordered, validated list of actions; the position of an action is its agent index."""

    def __init__(self, actions: Sequence[Action]) -> None:
        if not actions:
            raise ValueError("the action table is empty")
        names = [a.name for a in actions]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"action names must be unique; repeated: {repeated}")
        self._actions = tuple(actions)
        self._index = {a.name: i for i, a in enumerate(self._actions)}

    def __getitem__(self, i):  # type: ignore[override]
        return self._actions[i]

    def __len__(self) -> int:
        return len(self._actions)

    def __iter__(self) -> Iterator[Action]:
        return iter(self._actions)

    def __repr__(self) -> str:
        return f"ActionTable({[a.name for a in self._actions]})"

    @property
    def names(self) -> list[str]:
        return [a.name for a in self._actions]

    def index(self, name: str) -> int:  # type: ignore[override]
        """Agent index of the action called `name`."""
        try:
            return self._index[name]
        except KeyError:
            raise KeyError(f"unknown action {name!r}; known: {self.names}") from None

    def get(self, name: str) -> Action:
        """The action called `name` (KeyError naming the known ones otherwise)."""
        return self._actions[self.index(name)]

    def allowed(self, free_nm: float) -> np.ndarray:
        """Boolean mask of the actions whose required free square fits in `free_nm`."""
        return np.array([a.require_free_nm <= free_nm for a in self._actions])

    def reset_indices(self) -> list[int]:
        """Indices of the actions used to damage a good tip in training mode."""
        return [i for i, a in enumerate(self._actions) if a.reset]


def _coerce(row: dict, source: str) -> Action:
    """Build an Action from a TOML table or CSV row, naming the row and field on error."""
    expected = {f.name for f in fields(Action)}
    label = f"{source}: action {row.get('name', '?')!r}"
    missing, unknown = expected - row.keys(), row.keys() - expected
    if missing:
        raise ValueError(f"{label} is missing {sorted(missing)}")
    if unknown:
        raise ValueError(f"{label} has unknown fields {sorted(unknown)}")
    values = {}
    for f in fields(Action):
        raw = row[f.name]
        try:
            if f.type == "float":
                values[f.name] = float(raw)
            elif f.type == "bool":
                values[f.name] = _to_bool(raw)
            else:
                values[f.name] = str(raw).strip()
        except (TypeError, ValueError):
            raise ValueError(f"{label}: {f.name}={raw!r} is not a valid {f.type}") from None
    try:
        return Action(**values)
    except ValueError as err:
        raise ValueError(f"{source}: {err}") from None


def _to_bool(raw: object) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in ("true", "yes", "1"):
        return True
    if text in ("false", "no", "0"):
        return False
    raise ValueError(raw)


def load_actions(path: str | Path | None = None) -> ActionTable:
    """Load an action table from a TOML (``[[action]]`` tables) or CSV file.

    Parameters
    ----------
    path
        File to read; ``None`` gives the default DeepSPM table shipped in the package.
    """
    if path is None:
        text = resources.files("deepspm_bluesky").joinpath("actions.toml").read_text()
        return _from_toml(text, "default action table")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"action table {path} does not exist")
    if path.suffix == ".toml":
        return _from_toml(path.read_text(), str(path))
    if path.suffix == ".csv":
        with path.open(newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.DictReader(fh))
        if any(None in row or None in row.values() for row in rows):
            raise ValueError(f"{path}: a row has more or fewer cells than the header")
        return ActionTable([_coerce(row, str(path)) for row in rows])
    raise ValueError(f"action table {path}: unknown format {path.suffix!r} (use .toml or .csv)")


def _from_toml(text: str, source: str) -> ActionTable:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"{source}: not valid TOML ({err})") from None
    rows = doc.get("action")
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        raise ValueError(f"{source}: expected a list of [[action]] tables")
    return ActionTable([_coerce(row, source) for row in rows])
