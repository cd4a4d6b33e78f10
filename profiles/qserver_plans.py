"""The plans the queue server offers, with parameter types it can check before a plan runs.

A queue sends names, not Python objects: the STM by its device name, the classifier and the
agent by name (`deepspm_bluesky.ml.named`), the mode from its two values.
"""

from __future__ import annotations

import functools

from bluesky.plans import count
from bluesky_queueserver import parameter_annotation_decorator

from deepspm_bluesky.plans import autonomous_survey

__all__ = ["count", "queued_survey"]

SURVEY_PARAMETERS = {
    "stm": {"annotation": "STMs", "devices": {"STMs": ["stm"]},
            "description": "The microscope (device name)."},
    "max_images": {"annotation": "int", "min": 1, "description": "Images to take."},
    "mode": {"annotation": "Modes", "enums": {"Modes": ["operational", "training"]},
             "description": "operational, or training (conditions at once, learns)."},
    "classifier": {"annotation": "typing.Optional[str]",
                   "description": "pretrained (default), pretrained-ag100, or a checkpoint file."},
    "agent": {"annotation": "typing.Optional[str]",
              "description": "pretrained (default), random, or a checkpoint file."},
    "learn": {"annotation": "bool", "description": "Training mode: learn from each outcome."},
    "state_dir": {"annotation": "typing.Optional[str]",
                  "description": "Folder to resume from and keep the journal in."},
    "navigation_file": {"annotation": "typing.Optional[str]",
                        "description": "Keep only the navigation state in this file."},
    "min_free_mb": {"annotation": "float", "min": 0,
                    "description": "End when the state folder's disk has less free (MB)."},
    "md": {"annotation": "typing.Optional[typing.Dict[str, typing.Any]]",
           "description": "Extra metadata for the start document (sample, operator, ...)."},
}


def queued_survey():
    """`deepspm_bluesky.plans.autonomous_survey` with the parameter types of a queue."""

    @functools.wraps(autonomous_survey)  # its signature and docstring
    def survey(*args, **kwargs):  # a generator function: the queue server's mark of a plan
        return (yield from autonomous_survey(*args, **kwargs))

    return parameter_annotation_decorator({
        "description": "Survey the sample: scan, judge every image, condition the tip when "
                       "it goes bad.",
        "parameters": SURVEY_PARAMETERS,
    })(survey)
