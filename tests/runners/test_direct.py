"""Our documented patches of Beam's local runners keep Beam's answers."""

from __future__ import annotations

import sys

import apache_beam as beam

from runners.direct import direct_runner


class _A(beam.DoFn):
    def process(self, element, window=beam.DoFn.WindowParam):
        yield element


class _B(beam.DoFn):
    def process(self, element, side, *, timestamp=beam.DoFn.TimestampParam):
        yield element


def test_memoized_method_arguments_are_per_class_and_never_shared_lists():
    from apache_beam.transforms import core

    direct_runner(streaming=True)  # installs the patches
    a_args, a_defaults = core.get_function_arguments(_A(), "process")
    b_args, _ = core.get_function_arguments(_B(), "process")
    assert a_args == ["element", "window"] and b_args[:2] == ["element", "side"]
    a_args.append("mutated")
    assert core.get_function_arguments(_A(), "process")[0] == ["element", "window"]
    # A method set on the instance is inspected afresh.
    odd = _A()
    odd.process = lambda element, extra: iter(())  # type: ignore[method-assign]
    assert core.get_function_arguments(odd, "process")[0] == ["element", "extra"]

    # A wrapper handing its methods to another DoFn (as with_exception_handling does).
    class Delegating(beam.DoFn):
        def __init__(self, inner):
            self.inner = inner

        def __getattribute__(self, name):
            if name in ("process", "setup"):
                return getattr(object.__getattribute__(self, "inner"), name)
            return object.__getattribute__(self, name)

    assert core.get_function_arguments(Delegating(_A()), "process")[0] == ["element", "window"]
    assert core.get_function_arguments(Delegating(_B()), "process")[0][:2] == ["element", "side"]
    # beam.Map answers through _inspect_process: the wrapped callable decides.
    m1 = beam.Map(lambda x: x).fn
    m2 = beam.Map(lambda x, y=1: x).fn
    assert (
        core.get_function_arguments(m1, "process")[0]
        != core.get_function_arguments(m2, "process")[0]
    )


def test_plain_state_is_weighed_without_walking_module_globals():
    from apache_beam.runners.worker import statecache

    direct_runner(streaming=False)
    values = [b"x" * 100, b"y" * 10]
    expected = sys.getsizeof(values) + sum(sys.getsizeof(v) for v in values)
    assert statecache.get_deep_size(values) == expected
    assert statecache.get_deep_size({"a": [1, 2]}) > 0  # other objects: objsize as before


def test_state_sampler_wakes_often_enough_not_to_hold_up_bundle_ends():
    from apache_beam.runners.worker import statesampler

    from runners.direct import SAMPLING_PERIOD_MS

    direct_runner(streaming=False)
    assert statesampler.StateSampler("step", None).sampling_period_ms == SAMPLING_PERIOD_MS
    # An explicit longer period is capped too.
    assert statesampler.StateSampler("step", None, 200).sampling_period_ms == SAMPLING_PERIOD_MS
    assert SAMPLING_PERIOD_MS <= 2


class _Numbering(beam.DoFn):
    """Numbers the elements of its bundle from ``start``: a fresh copy per bundle
    starts again."""

    def __init__(self, start: int) -> None:
        self.start = start
        self.seen = 0

    def process(self, element):
        yield element, self.start + self.seen
        self.seen += 1


def _numbered(dofn: _Numbering) -> list:
    from apache_beam.testing.test_stream import TestStream
    from apache_beam.testing.util import assert_that, equal_to

    from runners.direct import direct_options

    stream = TestStream().add_elements(["a", "b"]).advance_watermark_to(10)
    stream = stream.add_elements(["c"]).advance_watermark_to_infinity()
    p = beam.Pipeline(runner=direct_runner(streaming=True), options=direct_options(streaming=True))
    out = p | stream | beam.ParDo(dofn)
    expected = [("a", dofn.start), ("b", dofn.start + 1), ("c", dofn.start)]
    assert_that(out, equal_to(expected))
    p.run().wait_until_finish()
    return expected


def test_each_bundle_gets_a_fresh_dofn_and_a_changed_dofn_is_pickled_anew():
    dofn = _Numbering(0)
    _numbered(dofn)  # two bundles: each numbers from the start, not from the last
    dofn.start = 100  # changed between runs: the next run sees it
    _numbered(dofn)


def test_an_options_view_is_built_once_and_shares_the_values():
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

    direct_runner(streaming=True)
    options = PipelineOptions(["--streaming"])
    view = options.view_as(StandardOptions)
    assert view is options.view_as(StandardOptions) and view.streaming
    view.streaming = False
    assert not options.view_as(StandardOptions).streaming
    assert not options.get_all_options()["streaming"]
    other = PipelineOptions([])
    assert (
        other.view_as(StandardOptions) is not view and not other.view_as(StandardOptions).streaming
    )
