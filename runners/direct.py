"""DirectRunner set-up: which local runner executes a pipeline, and its options.

Beam 2.77's ``DirectRunner`` first tries Prism, a binary it downloads at run time, and
falls back to other runners when that fails; results then depend on the network. We
pick explicitly instead:

- streaming pipelines (TestStream replays, watermarks, triggers, processing time) run
  on the ``BundleBasedDirectRunner``, Beam's reference streaming implementation;
- bounded pipelines run on the ``FnApiRunner``, the fast portable in-process runner.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.direct.direct_runner import BundleBasedDirectRunner
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.runners.runner import PipelineRunner
from apache_beam.transforms.window import IntervalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP, Duration


def direct_runner(*, streaming: bool) -> PipelineRunner:
    """The local runner for a streaming or a bounded pipeline."""
    _memoize_option_views()
    if streaming:
        _tolerate_empty_bundles_with_side_inputs()
        _pickle_each_dofn_once_per_run()
        _memoize_dofn_specs()
        _memoize_method_arguments()
        return BundleBasedDirectRunner()
    _weigh_plain_state_cheaply()
    _sample_state_briefly()
    _memoize_dofn_specs()
    _memoize_method_arguments()
    return FnApiRunner()


def _replace_once(owner: Any, name: str, wrap: Callable[[Any], Any]) -> None:
    """Replace ``owner.name`` (a module's or a class's) by ``wrap(original)``, once
    per process: every patch below is idempotent through this."""
    flag = f"_sml_replaced_{name}"
    if vars(owner).get(flag):
        return
    setattr(owner, name, wrap(getattr(owner, name)))
    setattr(owner, flag, True)


def _memoize_method_arguments() -> None:
    """Speed up Beam 2.77's per-bundle DoFn set-up: cache method signatures.

    Every bundle builds a ``DoFnSignature``, which inspects the signature of the
    DoFn's methods (``core.get_function_arguments``, about 100 us each with
    ``inspect``); the BundleBasedDirectRunner does it for every bundle of every step.
    A method defined on the DoFn's class has the same arguments for every instance,
    so those are cached per function. Anything else (methods set on the instance,
    DoFns that answer through ``_inspect_<name>`` as ``beam.Map`` does, wrappers that
    delegate the attribute to another DoFn) is inspected every time as before.
    Measured on the default ``main.py`` run (streaming, 20k events): about 1.2 s of
    7 s CPU. Idempotent.
    """
    import types

    from apache_beam.transforms import core

    def wrap(original: Callable[[Any, str], Any]) -> Callable[[Any, str], Any]:
        cache: dict[Any, tuple[list[str], list[Any]]] = {}  # by the method's function

        def get_function_arguments(obj: Any, func: str) -> Any:
            if hasattr(obj, f"_inspect_{func}"):
                return original(obj, func)
            bound = getattr(obj, func, None)
            function = getattr(bound, "__func__", None)
            # Only a plain method bound to obj itself: wrappers that hand the attribute
            # to another DoFn (with_exception_handling, ...) are inspected every time.
            if getattr(bound, "__self__", None) is not obj or not isinstance(
                function, types.FunctionType
            ):
                return original(obj, func)
            if function not in cache:
                cache[function] = original(obj, func)
            args, defaults = cache[function]
            return list(args), list(defaults)

        return get_function_arguments

    _replace_once(core, "get_function_arguments", wrap)


def _memoize_option_views() -> None:
    """Speed up Beam 2.77's pipeline construction: one view per options class.

    ``PipelineOptions.view_as(cls)`` builds an argparse parser for ``cls`` and parses
    the flags again on every call (about 1 ms); building and running one pipeline
    calls it about 100 times (every ``apply`` and type check asks for a view). A view
    keeps nothing of its own: it reads and writes the options' shared ``_all_options``
    dict, filled once per option name, and parses flags that never change. So the
    first view of each class is kept for its options object and handed out again.
    Measured on the windowing benchmark's streaming pipeline: 100 views, about 0.1 s
    of every construction. Idempotent.
    """
    import weakref

    from apache_beam.options import pipeline_options

    def wrap(original: Callable[[Any, type], Any]) -> Callable[[Any, type], Any]:
        views: weakref.WeakKeyDictionary[Any, dict[type, Any]] = weakref.WeakKeyDictionary()

        def view_as(self: Any, cls: type) -> Any:
            of_self = views.setdefault(self, {})
            if cls not in of_self:
                of_self[cls] = original(self, cls)
            return of_self[cls]

        return view_as

    _replace_once(pipeline_options.PipelineOptions, "view_as", wrap)


# id(DoFn) -> (a weak reference to it, its pickled form), for the current run
_PICKLED_DOFNS: dict[int, tuple[Any, bytes]] = {}


def _pickle_each_dofn_once_per_run() -> None:
    """Speed up Beam 2.77's BundleBasedDirectRunner: pickle each DoFn once per run.

    Every bundle of every ParDo starts with ``pickler.roundtrip(dofn)``: pickle the
    DoFn, unpickle a fresh copy (Beam's own TODO there: keep the pickled form). For
    a lambda, pickled by value, that is about 0.3 ms, and the runner makes a bundle
    per step per watermark. The pickled form is kept for the run and unpickled for
    each bundle: every bundle still gets a fresh copy, and a DoFn that cannot be
    pickled still fails at its first bundle. Kept forms are of the copy a ParDo makes
    when it is applied (a DoFn changed later is another object, pickled anew), found
    by identity (checked through a weak reference) and dropped when a run starts, so
    they do not pile up. The kept form skips the bz2 and base64 of ``pickler.dumps``,
    as Beam's roundtrip does. Measured on a TestStream of 50 watermark steps through
    8 ``beam.Map`` steps (400 bundles): 0.34 s -> 0.16 s. Idempotent.
    """
    import weakref

    from apache_beam.internal import pickler
    from apache_beam.runners.direct import transform_evaluator

    class PickleOnce:
        """The ``pickler`` that transform_evaluator sees: Beam's, with a roundtrip
        that pickles each object once."""

        def __getattr__(self, name: str) -> Any:
            return getattr(pickler, name)

        @staticmethod
        def roundtrip(obj: Any) -> Any:
            # What Beam's roundtrip does, in two halves: pickle, unpickle (no bz2 and
            # base64 as in pickler.dumps, which cost more than the pickling).
            lib = pickler.desired_pickle_lib
            dumps, loads = getattr(lib, "_dumps", None), getattr(lib, "_loads", None)
            kept = _PICKLED_DOFNS.get(id(obj))
            if kept is None or kept[0]() is not obj:
                try:
                    ref = weakref.ref(obj)
                except TypeError:
                    ref = None
                if ref is None or dumps is None or loads is None:
                    return pickler.roundtrip(obj)  # as before
                kept = _PICKLED_DOFNS[id(obj)] = (ref, dumps(obj))
            assert loads is not None
            return loads(kept[1])

    def wrap(original: Callable[..., Any]) -> Callable[..., Any]:
        def run_pipeline(self: Any, *args: Any, **kwargs: Any) -> Any:
            _PICKLED_DOFNS.clear()
            return original(self, *args, **kwargs)

        return run_pipeline

    _replace_once(transform_evaluator, "pickler", lambda _: PickleOnce())
    _replace_once(BundleBasedDirectRunner, "run_pipeline", wrap)


_PLAIN = (bytes, str, int, float, bool, type(None))


def _weigh_plain_state_cheaply() -> None:
    """Speed up state writes on Beam 2.77's FnApiRunner.

    Every state write puts the value in the SDK worker's state cache, which weighs it
    with ``objsize.get_deep_size``; that walks the globals of every loaded module
    (thousands with torch and TensorFlow imported) on each call: about 5 ms per write
    here, whatever the value. Values that are plain scalars or bytes, or lists of them
    (a bag of ``BytesCoder`` elements, as our stateful steps keep), are weighed with
    ``sys.getsizeof`` instead, which is what objsize adds up for them anyway; anything
    else goes to objsize as before. Measured on ``benchmarks/online.py`` (SEA, 100k
    events, elements of 2048 rows): 157k -> 200k+ samples/s. Idempotent.
    """
    import sys

    from apache_beam.runners.worker import statecache

    def wrap(original: Callable[..., int]) -> Callable[..., int]:
        def get_deep_size(*objs: Any) -> int:
            total = 0
            for obj in objs:
                if isinstance(obj, _PLAIN):
                    total += sys.getsizeof(obj)
                elif type(obj) in (list, tuple) and all(isinstance(v, _PLAIN) for v in obj):
                    total += sys.getsizeof(obj) + sum(sys.getsizeof(v) for v in obj)
                else:
                    return original(*objs)
            return total

        return get_deep_size

    _replace_once(statecache, "get_deep_size", wrap)


SAMPLING_PERIOD_MS = 1


def _sample_state_briefly() -> None:
    """Stop paying up to 200 ms at the end of every bundle on Beam 2.77's FnApiRunner.

    Each bundle starts a state-sampler thread (it attributes time to steps for
    Beam's msecs counters) that sleeps in periods growing from 2 ms to 200 ms, and
    the end of the bundle joins it: the caller waits out the current sleep. A bundle
    of timers that takes 30 ms waits about 3.5 ms more; a 1 s bundle up to 200 ms.
    Sampling every ``SAMPLING_PERIOD_MS`` at most keeps the counters (more finely
    grained) and caps the wait. Measured on ``benchmarks/online.py`` (SEA, 1M events,
    101 bundles): 0.33 s of joins -> 0.06 s. Idempotent.
    """
    from apache_beam.runners.worker import statesampler

    def wrap(original: Callable[..., None]) -> Callable[..., None]:
        def __init__(self: Any, prefix: str, counter: Any, sampling_period_ms: int = 0) -> None:
            period = min(sampling_period_ms or SAMPLING_PERIOD_MS, SAMPLING_PERIOD_MS)
            original(self, prefix, counter, period)

        return __init__

    _replace_once(statesampler.StateSampler, "__init__", wrap)


def _memoize_dofn_specs() -> None:
    """Speed up Beam 2.77's local runners: cache DoFn state/timer specs.

    The BundleBasedDirectRunner calls ``userstate.get_dofn_specs`` for every bundle
    (and both runners several times per stateful step while translating); it wraps and inspects
    the signature of *every* method of the DoFn (about 35 with the base class) to find
    state and timer parameters. Those come from the class's method defaults, so they
    are cached per DoFn class. Measured on the inference benchmark's streaming run
    (20k events): MLP 14.0k -> 23.0k events/s, Transformer 8.6k -> 10.3k.
    """
    from apache_beam.runners.direct import transform_evaluator
    from apache_beam.transforms import userstate

    def wrap(original: Callable[[Any], Any]) -> Callable[[Any], Any]:
        cache: dict[type, Any] = {}

        def get_dofn_specs(dofn: Any) -> Any:
            cls = type(dofn)
            if cls not in cache:
                cache[cls] = original(dofn)
            return cache[cls]

        return get_dofn_specs

    _replace_once(userstate, "get_dofn_specs", wrap)
    # transform_evaluator imported both names directly; is_stateful_dofn looks the
    # function up in userstate, so it sees the cached one.
    transform_evaluator.get_dofn_specs = userstate.get_dofn_specs  # type: ignore[attr-defined]
    transform_evaluator.is_stateful_dofn = userstate.is_stateful_dofn  # type: ignore[attr-defined]


_EARLIEST = IntervalWindow(MIN_TIMESTAMP, MIN_TIMESTAMP + Duration(micros=1000))


def _tolerate_empty_bundles_with_side_inputs() -> None:
    """Work around a crash of Beam 2.77's BundleBasedDirectRunner.

    A step that drops every element of a bundle (a filter, or our lateness gate
    setting an expired batch aside) still passes an *empty* bundle downstream. For a
    ParDo with a windowed side input the executor then maps the window of the
    bundle's first element onto the side input, finds none and raises
    ``AttributeError: 'NoneType' object has no attribute 'max_timestamp'`` in a
    worker thread, and the pipeline hangs. An empty bundle has nothing to process,
    so we let it map onto the earliest possible window, which is ready at once.
    Idempotent; touches only empty bundles.
    """
    from apache_beam.runners.direct import executor

    def wrap(original: Callable[..., None]) -> Callable[..., None]:
        def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
            original(self, *args, **kwargs)
            if self._latest_main_input_window is None:
                self._latest_main_input_window = _EARLIEST

        return __init__

    _replace_once(executor.TransformExecutor, "__init__", wrap)


def run(pipeline: Any) -> Any:
    """Run a pipeline built on :func:`direct_runner` and return its result.

    For the streaming (legacy) runner Beam first round-trips the pipeline through its
    runner API and pickles every transform on the way (bz2 at level 9), to prove it
    portable. A replay source holds its whole stream in its ``TestStream``, so that
    proof costs about 10 us per event before the first one flows (1 s per 100k); the
    FnApiRunner always goes through the runner API anyway. This runs without the
    proof; the test suite still runs every streaming pipeline with it.
    """
    return pipeline.run(test_runner_api=False)


def direct_options(*, streaming: bool, extra: list[str] | None = None) -> PipelineOptions:
    """Pipeline options for a local run."""
    args = [*(extra or [])]
    if streaming:
        args.append("--streaming")
    return PipelineOptions(args, save_main_session=False)
