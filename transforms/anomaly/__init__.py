"""Streaming anomaly detection on micro-batches (:mod:`transforms.anomaly.detect`)."""

from transforms.anomaly.detect import DetectAnomalies

__all__ = ["DetectAnomalies"]
