"""Federated streaming learning: devices are keys, rounds are event-time windows."""

from transforms.federated.learn import FederatedLearning

__all__ = ["FederatedLearning"]
