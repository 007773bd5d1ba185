"""Our documented patches of Beam's local runners keep Beam's answers, install only
when asked, refuse other Beam releases, and put back Beam's very own objects."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import apache_beam as beam
import pytest

from runners import patches
from runners.direct import direct_options, direct_runner
from runners.patches import BeamVersionMismatch


@pytest.fixture(autouse=True)
def unpatched() -> Iterator[None]:
    """Each test starts and ends with no patch installed (the suite's own fixture
    applies them first)."""
    patches.revert()
    yield
    patches.revert()


def _patched_attributes() -> dict[str, object]:
    """Every attribute a patch replaces, as it is now (the owner's own attribute)."""
    from apache_beam.options import pipeline_options
    from apache_beam.runners.direct import evaluation_context, executor, transform_evaluator
    from apache_beam.runners.direct.direct_runner import BundleBasedDirectRunner
    from apache_beam.runners.worker import statecache, statesampler
    from apache_beam.transforms import core, trigger, userstate

    return {
        "view_as": vars(pipeline_options.PipelineOptions)["view_as"],
        "get_function_arguments": core.get_function_arguments,
        "get_dofn_specs": userstate.get_dofn_specs,
        "evaluator.get_dofn_specs": transform_evaluator.get_dofn_specs,
        "evaluator.is_stateful_dofn": transform_evaluator.is_stateful_dofn,
        "evaluator.pickler": transform_evaluator.pickler,
        "ParDoEvaluator.finish_bundle": vars(transform_evaluator._ParDoEvaluator)["finish_bundle"],
        "run_pipeline": vars(BundleBasedDirectRunner)["run_pipeline"],
        "get_deep_size": statecache.get_deep_size,
        "StateSampler.__init__": vars(statesampler.StateSampler)["__init__"],
        "executor.MetricsContainer": executor.MetricsContainer,
        "_pvalue_to_value": vars(evaluation_context._SideInputsContainer)["_pvalue_to_value"],
        "known_windows": vars(trigger.MergeableStateAdapter)["known_windows"],
        "GroupAlsoByWindow.process_element": vars(
            transform_evaluator._StreamingGroupAlsoByWindowEvaluator
        )["process_element"],
    }


class _A(beam.DoFn):
    def process(self, element, window=beam.DoFn.WindowParam):
        yield element


class _B(beam.DoFn):
    def process(self, element, side, *, timestamp=beam.DoFn.TimestampParam):
        yield element


def test_memoized_method_arguments_are_per_class_and_never_shared_lists():
    from apache_beam.transforms import core

    patches.apply(streaming=True)
    a_args, a_defaults = core.get_function_arguments(_A(), "process")
    b_args, _ = core.get_function_arguments(_B(), "process")
    assert a_args == ["element", "window"] and b_args[:2] == ["element", "side"]
    a_args.append("mutated")
    assert core.get_function_arguments(_A(), "process")[0] == ["element", "window"]
    # A method set on the instance is inspected afresh.
    odd = _A()
    odd.process = lambda element, extra: iter(())
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

    patches.apply(streaming=False)
    values = [b"x" * 100, b"y" * 10]
    expected = sys.getsizeof(values) + sum(sys.getsizeof(v) for v in values)
    assert statecache.get_deep_size(values) == expected
    assert statecache.get_deep_size({"a": [1, 2]}) > 0  # other objects: objsize as before
    # a class that says its own size (a model version) is asked, not walked
    from model.artifact import ModelArtifact
    from model.mlp import MLPClassifier

    art = ModelArtifact.from_module(MLPClassifier(3, seed=0), 1)
    assert statecache.get_deep_size([art, art]) == sys.getsizeof([art, art]) + 2 * sys.getsizeof(
        art
    )
    assert sys.getsizeof(art) < len(art.data or b"") + 512


def _side_input_values(patched: bool) -> list[tuple[int, list[int]]]:
    """Each main element with the side input values of its (fixed, 10 s) window."""
    from apache_beam.testing.test_stream import TestStream
    from apache_beam.transforms import window as bw

    stream = (
        TestStream()
        .add_elements([bw.TimestampedValue(v, v) for v in (1, 12, 15, 27)], tag="side")
        .add_elements([bw.TimestampedValue(v, v) for v in (3, 14, 25, 38)], tag="main")
        .advance_watermark_to(5, tag="side")
        .advance_watermark_to(5, tag="main")
        .add_elements([bw.TimestampedValue(v, v) for v in (8, 21)], tag="side")
        .advance_watermark_to_infinity(tag="side")
        .advance_watermark_to_infinity(tag="main")
    )
    from tests.collect import Collect, take

    p = beam.Pipeline(runner=direct_runner(streaming=True), options=direct_options(streaming=True))
    both = p | stream
    fixed = bw.FixedWindows(10)
    side = both["side"] | "SideWindows" >> beam.WindowInto(fixed)
    main = both["main"] | "MainWindows" >> beam.WindowInto(fixed)
    out = main | beam.Map(_pair, beam.pvalue.AsList(side))
    _ = out | beam.ParDo(Collect("side"))
    with patches.applied(streaming=True) if patched else _nothing():
        p.run().wait_until_finish()
    return sorted(take("side"))


def _pair(x: int, side: list[int]) -> tuple[int, list[int]]:
    return x, sorted(side)


def test_a_windowed_side_input_is_looked_up_by_window_with_the_same_values():
    plain, patched = _side_input_values(False), _side_input_values(True)
    assert plain == patched == [(3, [1, 8]), (14, [12, 15]), (25, [21, 27]), (38, [])]


def test_a_trigger_tests_known_windows_by_lookup():
    from apache_beam.transforms import trigger

    patches.apply(streaming=True)
    adapter = trigger.MergeableStateAdapter(trigger.InMemoryUnmergedState())
    adapter.add_state("w1", trigger._ListStateTag("x"), 1)
    adapter.add_state("w2", trigger._ListStateTag("x"), 2)
    known = adapter.known_windows()
    assert "w2" in known and "w3" not in known and list(known) == ["w1", "w2"]


class _Pane(beam.DoFn):
    def process(self, kv, window=beam.DoFn.WindowParam, pane=beam.DoFn.PaneInfoParam):
        yield (int(window.start), pane.timing, pane.index, sorted(kv[1]))


def _windowed_panes(patched: bool, windows: int) -> tuple[list, int]:
    """The panes of ``windows`` fixed windows of one key, with late data inside and
    past the allowed lateness, and the most windows a key's grouping state held."""
    from apache_beam.testing.test_stream import TestStream
    from apache_beam.transforms import trigger, window
    from apache_beam.utils.timestamp import Timestamp

    from tests.collect import Collect, take

    stream = TestStream()
    for w in range(windows):
        stream = stream.add_elements([window.TimestampedValue(("k", w), w * 10 + 1)])
        if w >= 4:  # late: one within the lateness (20 s), one past it (dropped)
            stream = stream.add_elements([window.TimestampedValue(("k", -w), (w - 2) * 10 + 5)])
            stream = stream.add_elements([window.TimestampedValue(("k", 1000 + w), (w - 4) * 10)])
        stream = stream.advance_watermark_to(Timestamp(w * 10 + 10))
    held: list[int] = []
    copy = trigger.InMemoryUnmergedState.copy

    def counting(state):
        held.append(len(state.state))
        return copy(state)

    p = beam.Pipeline(runner=direct_runner(streaming=True), options=direct_options(streaming=True))
    _ = (
        p
        | stream.advance_watermark_to_infinity()
        | beam.WindowInto(
            window.FixedWindows(10),
            trigger=trigger.AfterWatermark(late=trigger.AfterCount(1)),
            accumulation_mode=trigger.AccumulationMode.ACCUMULATING,
            allowed_lateness=20,
        )
        | beam.GroupByKey()
        | beam.ParDo(_Pane())
        | beam.ParDo(Collect("panes"))
    )
    trigger.InMemoryUnmergedState.copy = counting
    try:
        with patches.applied(streaming=True) if patched else _nothing():
            p.run().wait_until_finish()
    finally:
        trigger.InMemoryUnmergedState.copy = copy
    return sorted(take("panes")), max(held)


def test_finished_windows_are_forgotten_and_no_pane_changes():
    plain, plain_held = _windowed_panes(False, 60)
    patched, patched_held = _windowed_panes(True, 60)
    assert patched == plain
    assert len({p[0] for p in plain}) == 60 and any(p[2] > 0 for p in plain)  # late panes
    assert all(v < 1000 for p in plain for v in p[3])  # too late: dropped by Beam
    assert plain_held >= 60  # Beam: every window ever seen, to the end
    assert patched_held <= 6  # patched: those within their allowed lateness


def _session_panes(patched: bool) -> list:
    """Sessions: a late element whose session merges into a finished one (Beam drops
    it: the merged window is finished)."""
    from apache_beam.testing.test_stream import TestStream
    from apache_beam.transforms import trigger, window
    from apache_beam.utils.timestamp import Timestamp

    from tests.collect import Collect, take

    stream = (
        TestStream()
        .add_elements([window.TimestampedValue(("k", 1), 0)])
        .advance_watermark_to(Timestamp(16))  # [0, 10) fired and finished
        .add_elements([window.TimestampedValue(("k", 2), 30)])
        .add_elements([window.TimestampedValue(("k", 3), 8)])  # [8, 18): merges into it
        .advance_watermark_to_infinity()
    )
    options = direct_options(streaming=True, extra=["--allow_unsafe_triggers"])  # it finishes
    p = beam.Pipeline(runner=direct_runner(streaming=True), options=options)
    _ = (
        p
        | stream
        | beam.WindowInto(
            window.Sessions(10),
            trigger=trigger.AfterWatermark(),
            allowed_lateness=5,
            accumulation_mode=trigger.AccumulationMode.DISCARDING,
        )
        | beam.GroupByKey()
        | beam.ParDo(_Pane())
        | beam.ParDo(Collect("sessions"))
    )
    with patches.applied(streaming=True) if patched else _nothing():
        p.run().wait_until_finish()
    return sorted(take("sessions"))


def test_sessions_keep_their_finished_windows():
    plain = _session_panes(False)
    assert _session_panes(True) == plain
    assert all(3 not in p[3] for p in plain)  # merged into a finished session: dropped


def test_timestamps_and_windows_are_shared_by_deep_copies_only_while_patched():
    import copy

    from apache_beam.transforms.window import GlobalWindow, IntervalWindow
    from apache_beam.utils.timestamp import Duration, Timestamp

    values = [Timestamp(5), Duration(3), IntervalWindow(0, 10), GlobalWindow()]
    state = {"holds": {values[2]: [values[0]]}, "pairs": (values[1], values[3])}
    with patches.applied(streaming=True):
        copied = copy.deepcopy(state)
        assert copied == state and copied is not state  # containers still copied
        assert copied["pairs"][0] is values[1]
        assert (
            next(iter(copied["holds"])) is values[2] and copied["holds"][values[2]][0] is values[0]
        )
    patches.revert()
    fresh = copy.deepcopy(values[0])
    assert fresh == values[0] and fresh is not values[0]


_STARTED: list[str] = []


class _Splits(beam.DoFn):
    def process(self, n):
        yield beam.pvalue.TaggedOutput("odd", n) if n % 2 else n


class _CountsBundles(beam.DoFn):
    def __init__(self, name: str) -> None:
        self._name = name

    def start_bundle(self):
        _STARTED.append(self._name)

    def process(self, n):
        yield n


def _split_counts(patched: bool, values: list[list[int]]) -> tuple[list, list, dict[str, int]]:
    from apache_beam.testing.test_stream import TestStream

    from tests.collect import Collect, take

    stream = TestStream()
    for bundle in values:
        stream = stream.add_elements(bundle)
    _STARTED.clear()
    p = beam.Pipeline(runner=direct_runner(streaming=True), options=direct_options(streaming=True))
    out = p | stream | beam.ParDo(_Splits()).with_outputs("odd", main="even")
    _ = out.even | "E" >> beam.ParDo(_CountsBundles("even")) | "CE" >> beam.ParDo(Collect("e"))
    _ = out.odd | "O" >> beam.ParDo(_CountsBundles("odd")) | "CO" >> beam.ParDo(Collect("o"))
    with patches.applied(streaming=True) if patched else _nothing():
        p.run().wait_until_finish()
    return sorted(take("e")), sorted(take("o")), {k: _STARTED.count(k) for k in ("even", "odd")}


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def test_empty_output_bundles_schedule_no_consumer_and_change_no_result():
    bundles = [[2, 4], [6], [1, 8], [10]]  # one bundle in four has an odd number
    plain = _split_counts(False, bundles)
    patched = _split_counts(True, bundles)
    assert plain[:2] == patched[:2] == ([2, 4, 6, 8, 10], [1])
    assert plain[2]["odd"] >= len(bundles)  # Beam: the odd consumer ran for each bundle
    assert patched[2] == {"even": len(bundles), "odd": 1}  # patched: only for its one


class _Counted(beam.DoFn):
    def setup(self):
        self.seen = beam.metrics.Metrics.counter("test", "seen")

    def process(self, element):
        self.seen.inc()
        yield element


def _counted(patched: bool, bundles: int) -> int:
    from apache_beam.metrics.metric import MetricsFilter
    from apache_beam.testing.test_stream import TestStream

    stream = TestStream()
    for b in range(bundles):
        stream = stream.add_elements(list(range(10))).advance_watermark_to(10 * (b + 1))
    with patches.applied(streaming=True) if patched else _nothing():
        p = beam.Pipeline(runner=direct_runner(streaming=True),
                          options=direct_options(streaming=True))  # fmt: skip
        _ = p | stream.advance_watermark_to_infinity() | beam.ParDo(_Counted())
        result = p.run()
        result.wait_until_finish()
    (counter,) = result.metrics().query(MetricsFilter().with_name("seen"))["counters"]
    return int(counter.committed)


def test_every_bundles_metrics_are_reported_once_patched():
    from runners.patches import bundle_metrics

    assert _counted(True, 10) == 100
    made = bundle_metrics.containers_made()
    assert _counted(True, 40) == 400
    assert bundle_metrics.containers_made() <= made + 16  # per thread and step, not bundle
    assert _counted(False, 10) < 100  # Beam: a thread's later bundles are lost


def test_state_sampler_wakes_often_enough_not_to_hold_up_bundle_ends():
    from apache_beam.runners.worker import statesampler

    from runners.patches.state_sampler import SAMPLING_PERIOD_MS

    patches.apply(streaming=False)
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

    stream = TestStream().add_elements(["a", "b"]).advance_watermark_to(10)
    stream = stream.add_elements(["c"]).advance_watermark_to_infinity()
    p = beam.Pipeline(runner=direct_runner(streaming=True), options=direct_options(streaming=True))
    out = p | stream | beam.ParDo(dofn)
    expected = [("a", dofn.start), ("b", dofn.start + 1), ("c", dofn.start)]
    assert_that(out, equal_to(expected))
    p.run().wait_until_finish()
    return expected


def test_each_bundle_gets_a_fresh_dofn_and_a_changed_dofn_is_pickled_anew():
    with patches.applied(streaming=True) as names:
        assert "pickle_once" in names
        dofn = _Numbering(0)
        _numbered(dofn)  # two bundles: each numbers from the start, not from the last
        dofn.start = 100  # changed between runs: the next run sees it
        _numbered(dofn)


def test_an_options_view_is_built_once_and_shares_the_values():
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

    patches.apply(streaming=True)
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


def test_nothing_is_patched_on_import_nor_by_choosing_a_runner():
    code = (
        "import runners, runners.patches, runners.direct\n"
        "from runners.direct import direct_runner\n"
        "direct_runner(streaming=True); direct_runner(streaming=False)\n"
        "from apache_beam.transforms import core, userstate\n"
        "from apache_beam.runners.worker import statecache\n"
        "assert runners.patches.active() == [], runners.patches.active()\n"
        "for f in (core.get_function_arguments, userstate.get_dofn_specs,"
        " statecache.get_deep_size):\n"
        "    assert f.__module__.startswith('apache_beam.'), f.__module__\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    # In this process too: choosing runners installs nothing.
    direct_runner(streaming=True)
    direct_runner(streaming=False)
    assert patches.active() == []


def test_apply_installs_the_patches_of_a_mode_and_is_idempotent():
    streaming = patches.apply(streaming=True)
    assert "pickle_once" in streaming and "state_sampler" not in streaming
    assert patches.active() == streaming
    installed = _patched_attributes()
    assert patches.apply(streaming=True) == streaming  # again: nothing changes
    assert _patched_attributes() == installed
    bounded = patches.apply(streaming=False)
    assert "state_weight" in bounded and "pickle_once" not in bounded
    assert set(patches.active()) == set(streaming) | set(bounded)
    assert patches.apply() == patches.active() == [p.name for p in patches.PATCHES]


def test_revert_restores_the_very_original_objects():
    original = _patched_attributes()
    patches.apply()
    installed = _patched_attributes()
    changed = {k for k in original if installed[k] is not original[k]}
    # Every replacement took (the evaluator's is_stateful_dofn is rebound to the same
    # function of userstate's).
    assert changed == set(original) - {"evaluator.is_stateful_dofn"}
    assert sorted(patches.revert()) == sorted(p.name for p in patches.PATCHES)
    restored = _patched_attributes()
    assert all(restored[k] is original[k] for k in original)
    assert patches.active() == [] and patches.revert() == []


def test_applied_reverts_only_what_it_installed():
    before = _patched_attributes()
    patches.apply(streaming=False)
    kept = patches.active()
    with patches.applied(streaming=True) as names:
        assert set(patches.active()) == set(kept) | set(names)
    assert patches.active() == kept
    patches.revert()
    assert all(_patched_attributes()[k] is v for k, v in before.items())


def test_another_beam_release_is_refused_naming_both_versions(monkeypatch):
    original = _patched_attributes()
    monkeypatch.setattr(beam, "__version__", "2.78.0")
    with pytest.raises(BeamVersionMismatch) as err:
        patches.apply()
    text = str(err.value)
    assert "2.77.0" in text and "2.78.0" in text and err.value.patch in text
    assert (err.value.written_for, err.value.installed) == ("2.77.0", "2.78.0")
    assert patches.active() == []  # none of them installed
    assert all(_patched_attributes()[k] is v for k, v in original.items())
    # One patch on its own refuses too.
    from runners.patches import method_arguments

    with pytest.raises(BeamVersionMismatch, match="method_arguments"):
        method_arguments.install()
    assert not method_arguments.PATCH.installed
