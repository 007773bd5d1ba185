"""The words every layer shares: column names, metric names, panes, dead letters.

One module, so that a column a step writes and the report that reads it, or a counter
a transform increments and the summary that queries it, can never drift apart. It
sits in the lowest layer (no Beam, no torch) because the parsers in
:mod:`model.streams` already produce dead letters.

>>> record = DeadLetter("late: window expired", Stage.WINDOWING, rows=3, payload={"event_ids": [1]})
>>> record["rows"], record["event_ids"], record.get("line")
(3, [1], None)
>>> DeadLetter.from_record(record.to_record()) == record
True
>>> str(Pane.ON_TIME), Pane("LATE") is Pane.LATE
('ON_TIME', True)
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

# -- columns of an input micro-batch (see model.batch) --------------------------------
KEY = "key"
EVENT_TIME = "event_time"
FEATURES = "features"
LABEL = "label"
EVENT_ID = "event_id"
LABEL_TIME = "label_time"  # a label-only batch: when each label became known

# -- columns a scorer adds (prediction rows) -------------------------------------------
PREDICTION = "prediction"
SCORE = "score"  # probability of the predicted class
MODEL_VERSION = "model_version"
MODEL = "model"  # keyed inference: the model key that scored the row
VALUE = "value"  # anomaly rows: the (first) feature value scored
ANOMALY_SCORE = "anomaly_score"  # anomaly rows: in [0, 1]
IS_ANOMALY = "is_anomaly"  # anomaly rows: the online threshold's alarm
CARRIED = (KEY, EVENT_TIME, EVENT_ID, LABEL)  # input columns a prediction row keeps
PREDICTION_COLUMNS = (*CARRIED, PREDICTION, SCORE, MODEL_VERSION)

# -- fields of a window statistics row (one per key, window and pane) ------------------
WINDOW_START_US = "window_start_us"
WINDOW_END_US = "window_end_us"
PANE = "pane"
PANE_INDEX = "pane_index"
IS_LAST = "is_last"
EVENTS = "events"
MEAN_SCORE = "mean_score"
LABELLED = "labelled"
ACCURACY = "accuracy"
MIN_VERSION = "min_version"
MAX_VERSION = "max_version"
STATS_FIELDS = (
    KEY,
    WINDOW_START_US,
    WINDOW_END_US,
    PANE,
    PANE_INDEX,
    IS_LAST,
    EVENTS,
    MEAN_SCORE,
    LABELLED,
    ACCURACY,
    MIN_VERSION,
    MAX_VERSION,
)

# -- metrics ---------------------------------------------------------------------------
NAMESPACE = "streaming_ml"


class Metric:
    """Names of the metrics the transforms report, in :data:`NAMESPACE` (plain
    strings: Beam carries them into runner protos as they are)."""

    EVENTS_IN = "events_in"
    PREDICTIONS_OUT = "predictions_out"
    DEAD_LETTERED = "dead_lettered"
    PANES_OUT = "panes_out"
    WINDOWS_FIRED = "windows_fired"
    EVENTS_ON_TIME = "events_on_time"
    EVENTS_LATE_ACCEPTED = "events_late_accepted"
    EVENTS_LATE_DROPPED = "events_late_dropped"
    EVENTS_UNJUDGED = "events_unjudged"
    ROWS_SCORED = "rows_scored"
    BATCH_SIZE = "batch_size"
    BATCH_LATENCY_MS = "batch_latency_ms"
    MODEL_VERSION = "model_version"
    MODEL_LOAD_MS = "model_load_ms"
    OOM_SPLITS = "oom_splits"
    MODEL_LOADS = "model_loads"
    MODEL_EVICTIONS = "model_evictions"
    SAMPLES_LEARNED = "samples_learned"
    MODEL_VERSIONS = "model_versions"
    EVENTS_UNLABELLED = "events_unlabelled"
    DRIFT_ALARMS = "drift_alarms"
    ADAPTATIONS = "adaptations"
    FEATURE_DRIFT = "feature_drift_windows"
    EVALUATED_PANES = "evaluated_panes"
    LABELS_REJECTED = "labels_rejected"
    KAFKA_RECORDS_OUT = "kafka_records_out"  # prediction rows committed to a Kafka topic
    # memory control (model.memory_control): measured passes or micro-batches, those
    # over the budget, out-of-memory errors split, and the peak bytes of each
    MEMORY_STEPS = "memory_steps"
    MEMORY_OVER_BUDGET = "memory_over_budget"
    MEMORY_OOMS = "memory_ooms"
    MEMORY_PEAK_BYTES = "memory_peak_bytes"
    # federated learning (transforms.federated): rounds closed, update bytes sent, and
    # the privacy spent (epsilon x 1000; its maximum is the run's)
    FEDERATED_ROUNDS = "federated_rounds"
    FEDERATED_BYTES = "federated_bytes"
    FEDERATED_EPSILON_MILLI = "federated_epsilon_milli"


# -- panes -----------------------------------------------------------------------------
class Pane(StrEnum):
    """When a window's pane fired, as a statistics row names it."""

    EARLY = "EARLY"
    ON_TIME = "ON_TIME"
    LATE = "LATE"
    UNKNOWN = "UNKNOWN"


# -- dead letters ----------------------------------------------------------------------
class Stage(StrEnum):
    """Where a dead letter was set aside."""

    PARSE = "parse"  # a source row that could not be read
    WINDOWING = "windowing"  # events whose window had expired when they arrived
    LABELS = "labels"  # a label that never found its event


_CORE = ("reason", "stage", "rows")


@dataclass(frozen=True)
class DeadLetter(Mapping[str, Any]):
    """Input set aside with the reason, never dropped silently.

    ``rows`` is how many input events the record stands for (one record may cover a
    whole late piece), so ``events in = events out + sum(rows)`` can be checked.
    ``payload`` says what was set aside (the raw line, the event ids, ...). The
    record reads like the flat mapping it is written as (``record["rows"]``,
    ``record["line"]``): :meth:`to_record` is what the sinks write.
    """

    reason: str
    stage: str
    rows: int = 1
    payload: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.reason:
            raise ValueError("a dead letter needs a reason")
        if self.rows < 0:
            msg = f"dead letter rows must be >= 0, got {self.rows!r}"
            raise ValueError(msg)
        clash = [k for k in self.payload if k in _CORE]
        if clash:
            msg = f"payload keys {clash!r} clash with the record's own fields"
            raise ValueError(msg)

    def to_record(self) -> dict[str, Any]:
        """The flat JSON-ready dict: ``reason``, ``stage``, ``rows`` and the payload."""
        return {"reason": self.reason, "stage": str(self.stage), "rows": self.rows, **self.payload}

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> DeadLetter:
        payload = {k: v for k, v in record.items() if k not in _CORE}
        return cls(str(record["reason"]), str(record["stage"]), int(record["rows"]), payload)

    def __getitem__(self, name: str) -> Any:
        if name in _CORE:
            return getattr(self, name)
        return self.payload[name]

    def __iter__(self) -> Iterator[str]:
        yield from _CORE
        yield from self.payload

    def __len__(self) -> int:
        return len(_CORE) + len(self.payload)

    def __hash__(self) -> int:
        return hash((self.reason, self.stage, self.rows))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DeadLetter):
            return NotImplemented
        return self.to_record() == other.to_record()
