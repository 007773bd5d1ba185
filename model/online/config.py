"""How the online step learns, and the event-time windows it learns in.

>>> grid = WindowGrid(size_us=10_000_000, allowed_lateness_us=30_000_000)
>>> grid.start_of(12_000_000), grid.end_of(12_000_000), grid.history_windows
(10000000, 20000000, 5)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from model.batch import window_start_us
from model.drift import DETECTORS
from model.learn.learner import LearnerConfig

ADAPT_POLICIES = ("none", "reset", "lr-boost", "background")


@dataclass(frozen=True)
class OnlineConfig:
    """What both online modes share.

    ``step_rows`` decouples the optimizer's batch from the stream's: a micro-batch
    larger than it is put in event-time order and learned in steps of at most
    ``step_rows`` rows (each predicted first, in prequential mode, by the model that
    learned from the steps before it). ``emit_every_samples`` also publishes a version
    every N samples within a window, besides the one after each window.

    The cadence of versions: a window end publishes one once at least
    ``publish_min_samples`` labelled samples were learned since the last, or (with
    ``publish_every_us``) once that much event time has passed since the last and
    anything was learned; in between, the last version goes on serving (decoupled:
    it is offered to the next window again). The default (1) publishes after every
    window that learned anything; a sparse stream (a few events per window) wants
    more, or it writes a version per event.

    ``grow_classes``: a label beyond the model's classes grows its output layer
    (:mod:`model.learn.grow`; the factory must take ``num_classes=``); off, such a
    label is an error (keep it out upstream: the sources dead-letter it).
    """

    learner: LearnerConfig = field(default_factory=LearnerConfig)
    step_rows: int | None = None
    emit_every_samples: int | None = None
    publish_min_samples: int = 1
    publish_every_us: int | None = None
    # adaptation: a drift detector on the step's own prequential error, and what an
    # alarm does: "reset" (a fresh model), "lr-boost" (the learning rate times
    # ``boost`` for the next ``boost_samples`` samples), "background" (a fresh model
    # started at a warning learns beside the serving one and replaces it at the
    # alarm; dropped after ``background_samples`` rows without one) or "none"
    adapt: str = "none"
    adapt_detector: str = "page-hinkley"
    boost: float = 5.0
    boost_samples: int = 500
    background_samples: int = 2000
    grow_classes: bool = False

    def __post_init__(self) -> None:
        if self.step_rows is not None and self.step_rows <= 0:
            msg = f"step_rows must be > 0, got {self.step_rows!r}"
            raise ValueError(msg)
        if self.emit_every_samples is not None and self.emit_every_samples <= 0:
            msg = f"emit_every_samples must be > 0, got {self.emit_every_samples!r}"
            raise ValueError(msg)
        if self.adapt not in ADAPT_POLICIES:
            msg = f"adapt must be one of {list(ADAPT_POLICIES)}, got {self.adapt!r}"
            raise ValueError(msg)
        if self.adapt_detector not in DETECTORS:
            msg = f"adapt_detector must be one of {sorted(DETECTORS)}, got {self.adapt_detector!r}"
            raise ValueError(msg)
        if self.background_samples <= 0:
            msg = f"background_samples must be > 0, got {self.background_samples!r}"
            raise ValueError(msg)
        if self.boost <= 0 or self.boost_samples <= 0:
            msg = f"boost and boost_samples must be > 0, got {self.boost!r}, {self.boost_samples!r}"
            raise ValueError(msg)
        if self.publish_min_samples <= 0:
            msg = f"publish_min_samples must be > 0, got {self.publish_min_samples!r}"
            raise ValueError(msg)
        if self.publish_every_us is not None and self.publish_every_us <= 0:
            msg = f"publish_every_us must be > 0, got {self.publish_every_us!r}"
            raise ValueError(msg)


@dataclass(frozen=True)
class WindowGrid:
    """Fixed event-time windows (as the input's ``FixedWindows`` has them) and their
    allowed lateness, in microseconds: the step learns window by window.
    ``window_us``: framed windows (several windows to one Beam window of ``size_us``,
    see ``transforms.window.spec.FramedWindows``) the size of a window inside the
    frame; 0 when every window is a Beam window."""

    size_us: int
    offset_us: int = 0
    allowed_lateness_us: int = 0
    window_us: int = 0

    def __post_init__(self) -> None:
        if self.size_us <= 0 or self.size_us % 1000:
            msg = f"window size must be a positive whole number of ms, got {self.size_us!r} us"
            raise ValueError(msg)
        if self.allowed_lateness_us < 0:
            msg = f"allowed lateness must be >= 0, got {self.allowed_lateness_us!r} us"
            raise ValueError(msg)
        if self.window_us and (self.window_us < 0 or self.size_us % self.window_us):
            msg = f"a frame ({self.size_us} us) must hold whole windows of {self.window_us} us"
            raise ValueError(msg)

    @property
    def framed(self) -> bool:
        """Whether a Beam window (a frame) holds several windows."""
        return 0 < self.window_us < self.size_us

    def start_of(self, t_us: int) -> int:
        """The start of the window holding an event at ``t_us``."""
        return int(window_start_us(t_us, self.size_us, self.offset_us))

    def end_of(self, t_us: int) -> int:
        """The end of the window holding an event at ``t_us``."""
        return self.start_of(t_us) + self.size_us

    @property
    def history_windows(self) -> int:
        """How many recent windows' models a late batch may still need: those its
        lateness reaches back to, and one on either side."""
        return math.ceil(self.allowed_lateness_us / self.size_us) + 2
