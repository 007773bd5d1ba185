"""Online learning without Beam: the per-key step object, its book and its config."""

from model.online.book import Book
from model.online.config import OnlineConfig, WindowGrid
from model.online.step import OnlineStep, PrequentialStep, StepSnapshot, TrainingStep, WindowEnd

__all__ = [
    "Book",
    "OnlineConfig",
    "OnlineStep",
    "PrequentialStep",
    "StepSnapshot",
    "TrainingStep",
    "WindowEnd",
    "WindowGrid",
]
