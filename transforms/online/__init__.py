"""Learning inside the stream: the trainer, the prequential learner, the classifier
that combines them, and late labels joined in event time."""

from model.online.config import OnlineConfig
from transforms.online.classifier import Mode, OnlineClassifier, OnlineOut
from transforms.online.drift import DetectDrift
from transforms.online.labels import JoinLabels, JoinOut
from transforms.online.lag import LagLabels
from transforms.online.prequential import PrequentialLearner, PrequentialOut
from transforms.online.trainer import OnlineTrainer

__all__ = [
    "DetectDrift",
    "JoinLabels",
    "JoinOut",
    "LagLabels",
    "Mode",
    "OnlineClassifier",
    "OnlineConfig",
    "OnlineOut",
    "OnlineTrainer",
    "PrequentialLearner",
    "PrequentialOut",
]
