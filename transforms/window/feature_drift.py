"""Feature drift per event-time window, from tfx-bsl sketches (:mod:`model.feature_drift`).

``windowed_batches | FeatureDrift(spec)``: every window's features are sketched
(``QuantilesSketch``, one stream per feature) by a ``CombineFn`` whose accumulators
merge across bundles and workers; each window is then compared with the window
before it that had data, feature by feature, by the Kolmogorov-Smirnov distance,
and a record says, per window: the distances, the critical distance for the two
windows' sizes, and which features drifted. The windows are the input's fixed
windows with the default trigger: a window is sketched once, when the watermark
passes its end (late events are not in its sketch).
"""

from __future__ import annotations

import pickle
from typing import Any

import apache_beam as beam
import pyarrow as pa
from apache_beam.transforms import window as bw

from model import batch as mb
from model.feature_drift import FeatureSketch, Summary, critical_distance, ks_distances
from transforms.online.sequential import Sequential
from transforms.window.spec import WindowSpec

ALPHA = 0.001  # the KS test's level: a false alarm per thousand window pairs and feature


class _SketchFn(beam.CombineFn):
    def __init__(self, eps: float) -> None:
        self._eps = eps

    def create_accumulator(self) -> FeatureSketch | None:
        return None

    def add_input(self, acc: FeatureSketch | None, batch: pa.RecordBatch) -> FeatureSketch:
        features = mb.features_numpy(batch)
        if acc is None:
            acc = FeatureSketch(features.shape[1], self._eps)
        acc.add(features)
        return acc

    def merge_accumulators(self, accs: Any) -> FeatureSketch | None:
        merged: FeatureSketch | None = None
        for acc in accs:
            if acc is None:
                continue
            if merged is None:
                merged = FeatureSketch(acc.num_features, acc.eps)
            merged.merge(acc)
        return merged

    def extract_output(self, acc: FeatureSketch | None) -> Summary | None:
        return None if acc is None else acc.summary()


class _WithWindow(beam.DoFn):
    def process(self, summary: Summary | None, window: Any = beam.DoFn.WindowParam) -> Any:
        if summary is not None:
            yield (window.start.micros, window.end.micros, summary)


class _Compare:
    """Each window against the one before it (the state: that window)."""

    def __init__(self) -> None:
        self.previous: tuple[int, int, Summary] | None = None

    def restore(self, data: bytes | None) -> None:
        self.previous = None if data is None else pickle.loads(data)

    def snapshot(self) -> bytes:
        return pickle.dumps(self.previous)

    def apply(self, element: tuple[int, int, Summary]) -> list[dict[str, Any]]:
        start, end, sketch = element
        previous, self.previous = self.previous, element
        if previous is None or previous[2].num_features != sketch.num_features:
            return []
        reference = previous[2]
        distances = ks_distances(reference, sketch)
        limit = critical_distance(reference.rows, sketch.rows, ALPHA, sketch.eps)
        return [
            {
                "window_start_us": start,
                "window_end_us": end,
                "reference_window_start_us": previous[0],
                "rows": sketch.rows,
                "reference_rows": reference.rows,
                "distance": "kolmogorov-smirnov",
                "statistics": [round(float(d), 4) for d in distances],
                "critical": round(limit, 4),
                "drifted_features": [int(i) for i in (distances > limit).nonzero()[0]],
            }
        ]


def _at_window_end(record: dict[str, Any], element: Any) -> int:
    return int(record["window_end_us"]) - 1000


def _by_start(element: tuple[int, int, Summary]) -> int:
    return element[0]


class FeatureDrift(beam.PTransform):
    """One record per window (after the first): how far each feature's distribution
    moved from the previous window's; see the module docstring."""

    def __init__(self, spec: WindowSpec, eps: float = 0.01) -> None:
        super().__init__()
        if spec.kind != "fixed":
            msg = f"feature drift compares fixed windows, got {spec.kind} windows"
            raise ValueError(msg)
        self._spec = spec
        self._eps = eps

    def expand(self, batches: beam.PCollection) -> beam.PCollection:
        size, offset = self._spec.size_s, self._spec.offset_s
        compare = Sequential(
            _Compare, _at_window_end, element_type=tuple, output_type=dict, order=_by_start
        )
        return (
            batches
            | "Windows" >> beam.WindowInto(bw.FixedWindows(size, offset))
            | "Sketch" >> beam.CombineGlobally(_SketchFn(self._eps)).without_defaults()
            | "WithWindow" >> beam.ParDo(_WithWindow())
            | "Global" >> beam.WindowInto(bw.GlobalWindows())
            | "Compare" >> compare
        )
