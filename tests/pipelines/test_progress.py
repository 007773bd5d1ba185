import io

from pipelines.progress import Printer, Progress


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_lines_when_not_a_terminal():
    p = Progress(events_in=500, scored=400, newest_event_us=10_000_000, watermark_us=8_000_000)
    out = io.StringIO()
    Printer(p, total=1000, out=out).report()
    line = out.getvalue()
    assert line.endswith("\n") and "\r" not in line
    assert "events 500" in line and "scored 400" in line and "watermark lag 2.0s" in line
    assert p.samples[-1]["events_in"] == 500


def test_progress_bar_on_a_terminal():
    p = Progress(events_in=500)
    out = Tty()
    Printer(p, total=1000, out=out).report()
    assert out.getvalue().startswith("\r[##########..........]")


def test_printer_reports_until_stopped():
    p = Progress(events_in=1)
    out = io.StringIO()
    with Printer(p, total=None, interval=0.01, out=out):
        import time

        time.sleep(0.05)
    assert len(out.getvalue().splitlines()) >= 2  # periodic lines plus the final one


def test_a_batch_before_any_watermark_shows_no_lag():
    # a bounded run's batches carry Beam's minimum timestamp: no watermark yet, no lag
    import numpy as np
    from apache_beam.utils.timestamp import MIN_TIMESTAMP

    from model import batch as mb
    from pipelines import progress

    live = progress.start("tap-test")
    try:
        tap = progress._SourceTap("tap-test")
        batch = mb.make_batch(["a"], np.array([5_000_000]), np.ones((1, 1), np.float32))
        list(tap.process(mb.with_watermark(batch, MIN_TIMESTAMP.micros)))
        assert live.events_in == 1 and live.watermark_us is None and live.lag_s() is None
        list(tap.process(mb.with_watermark(batch, 3_000_000)))
        assert live.lag_s() == 2.0
    finally:
        progress.finish("tap-test")
