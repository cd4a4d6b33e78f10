"""The survey's state directory: what a survey needs on disk to be stopped and resumed.

::

    DIR/navigation.npz   the approach-area grid (used ground, position, debris count)
    DIR/policy.json      the loop's counters and random state, and how far the run got
    DIR/agent.state      the agent's own state, when it keeps one
    DIR/journal/         every document of the open run (see `deepspm_bluesky.journal`)
    DIR/STOP             create this file to end the survey at the next cycle (DeepSPM's)
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

STOP_FILE = "STOP"


class StateDirectory:
    """Paths of one survey's state, and the atomic save and checked load of its progress.

    Parameters
    ----------
    path
        The directory (created if missing).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path).expanduser()
        if self.path.exists() and not self.path.is_dir():
            raise NotADirectoryError(f"state directory {self.path} is a file")
        self.journal.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"StateDirectory({str(self.path)!r})"

    @property
    def navigation(self) -> Path:
        return self.path / "navigation.npz"

    @property
    def progress(self) -> Path:
        return self.path / "policy.json"

    @property
    def agent(self) -> Path:
        return self.path / "agent.state"

    @property
    def journal(self) -> Path:
        return self.path / "journal"

    @property
    def stop_file(self) -> Path:
        return self.path / STOP_FILE

    def stop_requested(self) -> bool:
        """True while a STOP file is in the directory."""
        return self.stop_file.exists()

    def free_mb(self) -> float:
        """Free space on the directory's disk, in MB."""
        return shutil.disk_usage(self.path).free / 1e6

    def save_progress(self, progress: dict[str, Any]) -> None:
        """Write `progress` (JSON-ready) atomically: a kill leaves the old or the new file."""
        partial = self.progress.with_name(self.progress.name + ".partial")
        partial.write_text(json.dumps(progress))
        os.replace(partial, self.progress)

    def load_progress(self) -> dict[str, Any] | None:
        """The saved progress, None if there is none; a ValueError names a corrupt file."""
        if not self.progress.exists():
            return None
        try:
            progress = json.loads(self.progress.read_text())
        except (OSError, ValueError) as error:
            raise ValueError(f"state file {self.progress} is corrupt ({error})") from None
        if not isinstance(progress, dict):
            raise ValueError(f"state file {self.progress} does not hold a table of fields")
        return progress
