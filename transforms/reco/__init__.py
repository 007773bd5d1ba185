"""Recommendation transforms: the interactions source and streaming matrix
factorization in Beam state."""

from transforms.reco.recommend import Recommend
from transforms.reco.source import InteractionsSource

__all__ = ["InteractionsSource", "Recommend"]
