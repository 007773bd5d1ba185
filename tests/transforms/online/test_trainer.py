"""How long the decoupled trainer's versions are offered to the scorer."""

from __future__ import annotations

from model.online.config import WindowGrid
from transforms.online.trainer import carried_frames


def test_framed_versions_are_carried_for_event_time_not_for_frames():
    plain = WindowGrid(size_us=10_000_000)
    framed = WindowGrid(size_us=320_000_000, window_us=10_000_000)  # 32 windows a frame
    assert carried_frames(plain, 16) == 16
    # 16 windows' worth is half a frame: at least 2 frames, so an empty frame is covered
    assert carried_frames(framed, 16) == 2
    assert carried_frames(framed, 100) == 4
