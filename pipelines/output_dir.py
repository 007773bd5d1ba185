"""The output folder: one run's files only.

The summary counts what the sinks wrote under ``--output``, so files of an earlier
run there would be counted with this one's. A run into a folder that holds anything
is refused unless ``overwrite``; then the files a run writes are removed first (and
only those: whatever else the folder holds is left alone). A run marks its folder
(:data:`MARKER`); ``overwrite`` removes nothing from a folder without that mark (say
``--output ~``, whose own ``models/`` is not a run's). A run that resumes a stopped one
(``resume``: from its savepoint, on Flink) adds to that run's folder, removing nothing:
the summary then counts the whole stream.
"""

from __future__ import annotations

import os
import shutil

KAFKA_READ_DONE = ".kafka-read-done"  # a live Kafka read's ended partitions (transforms.io.kafka)
# what a run writes under its output folder (sinks, model store, report)
RUN_OUTPUTS = (
    "predictions",
    "windows",
    "dead_letter",
    "models",
    "drift",
    "feature_drift",
    "evaluation",
    "unlabelled",
    "label_dead_letter",
    KAFKA_READ_DONE,
    "metrics.json",
    "report.html",
    "accuracy.svg",
    "throughput.svg",
    "timeline.svg",
    "anomaly_scores.svg",
    "accuracy.png",  # the report's plots before it drew SVG
    "throughput.png",
    "timeline.png",
    "anomaly_scores.png",
)


MARKER = ".sml-output"  # written into every run's output folder


class OutputNotEmpty(ValueError):
    """The output folder holds files, and the run may not overwrite them."""


def prepare(path: str, *, overwrite: bool, resume: bool = False) -> None:
    """Make ``path`` ready for a run; see the module docstring."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise OutputNotEmpty(f"--output {path!r} is a file, not a folder")
    held = sorted(os.listdir(path)) if os.path.isdir(path) else []
    if resume and held and overwrite:
        raise OutputNotEmpty("a resumed run adds to its --output: --overwrite would remove it")
    if resume and held:
        if not os.path.exists(os.path.join(path, MARKER)):
            msg = f"--output {path!r} holds no earlier run's files ({MARKER}) to add to"
            raise OutputNotEmpty(msg)
        return
    if held and not overwrite:
        shown = ", ".join(held[:4]) + (", ..." if len(held) > 4 else "")
        msg = (
            f"--output {path!r} is not empty ({shown}): an earlier run's files would be "
            "counted with this run's; pass --overwrite to replace them, or choose "
            "another folder"
        )
        raise OutputNotEmpty(msg)
    if held and not os.path.exists(os.path.join(path, MARKER)):
        msg = (
            f"--output {path!r} holds files but no earlier run's mark ({MARKER}): "
            "--overwrite removes only what a run wrote; choose an empty or new folder"
        )
        raise OutputNotEmpty(msg)
    for name in RUN_OUTPUTS:
        stale = os.path.join(path, name)
        if os.path.isdir(stale) and not os.path.islink(stale):
            shutil.rmtree(stale)
        elif os.path.lexists(stale):
            os.remove(stale)
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, MARKER), "w", encoding="utf-8") as f:
        f.write("output folder of a pipelines/main.py run; --overwrite may replace its files\n")
