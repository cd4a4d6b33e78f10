"""A person's review of the survey's verdicts, stored beside the run in Tiled.

Reviews live in the run's own metadata, ``run.metadata["corrections"]``, one entry per image
index: ``{"label": "good"|"bad", "verdict", "p_good", "review": "wrong"|"right", "time"}``.
The run's metadata is where Tiled keeps the run itself (its start and stop documents), so the
reviews travel with the run to a served Tiled, a copy of the catalog or an export, and are
written through the Tiled client (an API key that may write is all a served Tiled needs). A
child node would instead be listed among the run's streams, and a node at the catalog's root
among its runs. Each review is one JSON patch of its own key, so reviews written from two
pages never overwrite each other, and the writer's stop document (also a patch) keeps them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from deepspm_bluesky.export import export_labels

CORRECTIONS_KEY = "corrections"
REVIEWS = ("wrong", "right")
TIP_VERDICTS = ("good", "bad")


def corrections_of(metadata) -> dict[str, dict]:
    """The reviews stored in a run's metadata, by image index (as a string)."""
    return dict(metadata.get(CORRECTIONS_KEY) or {})


def review_image(run, index: int, review: str, *,
                 clock: Callable[[], float] = time.time) -> dict:
    """Store a person's review of image `index`'s verdict in the run's metadata.

    Parameters
    ----------
    run
        A Bluesky run node of a Tiled client that may write.
    index
        The image's position in the run's ``primary`` stream (0 for the first).
    review
        ``"wrong"``: the tip was the opposite of the verdict; ``"right"``: the verdict holds.

    Returns
    -------
    dict
        The stored entry. A second review of the same image replaces the first.

    Raises
    ------
    ValueError
        If `review` is unknown, or the image was judged by the fast checks (crash, lost
        contact, debris), not by the classifier: there is no tip verdict to correct.
    IndexError
        If the run has no image `index`.
    """
    if review not in REVIEWS:
        raise ValueError(f"review must be one of {', '.join(REVIEWS)}, got {review!r}")
    table = run["primary"].base["internal"].read(["verdict", "p_good"])
    if not 0 <= index < len(table):
        raise IndexError(f"run {run.metadata['start']['uid'][:8]} has {len(table)} images; "
                         f"no image {index}")
    verdict, p_good = str(table["verdict"].iloc[index]), float(table["p_good"].iloc[index])
    if verdict not in TIP_VERDICTS:
        raise ValueError(f"image {index} was judged by the fast checks ({verdict}), not by "
                         "the classifier: there is no tip verdict to correct")
    opposite = TIP_VERDICTS[1 - TIP_VERDICTS.index(verdict)]
    entry = {"label": verdict if review == "right" else opposite, "verdict": verdict,
             "p_good": p_good, "review": review, "time": clock()}
    patch = [] if CORRECTIONS_KEY in run.metadata else [
        {"op": "add", "path": f"/{CORRECTIONS_KEY}", "value": {}}]
    patch.append({"op": "add", "path": f"/{CORRECTIONS_KEY}/{int(index)}", "value": entry})
    run.patch_metadata(metadata_patch=patch, drop_revision=True)
    return entry


def export_reviewed(client, out: str | Path) -> dict[str, list[Path]]:
    """Write every reviewed image of every run into ``out/good`` and ``out/bad`` by the
    person's label (corrected and confirmed ones alike), for ``train-classifier --data``.

    Returns
    -------
    dict
        ``{"good": [paths], "bad": [paths]}``, as `deepspm_bluesky.export.export_labels`.
    """
    written: dict[str, list[Path]] = {"good": [], "bad": []}
    for run in client.values():
        labels = {int(index): entry["label"]
                  for index, entry in corrections_of(run.metadata).items()}
        if labels:
            for name, paths in export_labels(run, out, labels=labels).items():
                written[name].extend(paths)
    return written
