"""Streams as users bring them: a file of daily rows, run with the default options."""

from __future__ import annotations

import datetime as dt
import json
import os

import numpy as np
import pytest

from pipelines import main
from transforms.io import read_jsonl_dir


def write_daily_csv(path: str, rows: int, *, seed: int = 0, labels: list[str] | None = None) -> str:
    """``rows`` days from 1961-01-01 (before 1970, as real records are): three
    features on different scales and a label that depends on them."""
    rng = np.random.default_rng(seed)
    day0 = dt.date(1961, 1, 1)
    lines = ["timestamp,temp,pressure,wind,y"]
    for i in range(rows):
        temp, pressure, wind = rng.normal(15, 8), rng.normal(1013, 9), rng.exponential(4)
        y = labels[i] if labels is not None else str(int(pressure < 1012 + rng.normal(0, 3)))
        day = (day0 + dt.timedelta(days=i)).isoformat()
        lines.append(f"{day},{temp:.2f},{pressure:.2f},{wind:.2f},{y}")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return path


def run_json(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, dict, str]:
    code = main.main([*argv, "--quiet", "--json"])
    out = capsys.readouterr().out
    summary = json.loads(out.strip().splitlines()[-1]) if code in (0, 1) else {}
    return code, summary, out


@pytest.mark.parametrize("streaming", ["--streaming", "--no-streaming"])
def test_a_daily_stream_gets_windows_of_its_own_time_scale(tmp_path, capsys, streaming):
    data = write_daily_csv(str(tmp_path / "daily.csv"), 400)
    out = str(tmp_path / "out")
    argv = ["--source", "csv", "--input", data, "--label-column", "y", "--output", out]
    code, summary, text = run_json([*argv, streaming], capsys)
    assert code == 0 and summary["balanced"] and summary["predictions_out"] == 400
    # the window the data's daily spacing asks for, said in the summary
    assert "window size: windows of 28 days (the data: an event every 1 day" in text
    windows = read_jsonl_dir(os.path.join(out, "windows"))
    assert {w["window_end_us"] - w["window_start_us"] for w in windows} == {28 * 86_400 * 10**6}
    assert 400 / 28 <= len(summary["windows"]) <= 400 / 28 + 2
    # window starts print their dates (1960-12-?? : windows align to the epoch)
    assert "  1961-01-" in text or "  1960-12-" in text
    # the stream is learned: the later windows are mostly right
    late = [w for w in summary["windows"][len(summary["windows"]) // 2 :] if w["labelled"]]
    assert sum(w["correct"] for w in late) / sum(w["labelled"] for w in late) > 0.7


@pytest.mark.parametrize("streaming", ["--streaming", "--no-streaming"])
def test_bad_labels_are_dead_lettered_before_any_learner_and_nothing_is_lost(
    tmp_path, capsys, streaming
):
    labels = [str(i % 2) for i in range(300)]
    bad = {40: "7", 90: "-1", 150: "abc", 200: "0.5", 250: ""}
    for i, text in bad.items():
        labels[i] = text
    labels[120] = "1.0"  # a class written as a float is a class
    data = write_daily_csv(str(tmp_path / "labels.csv"), 300, labels=labels)
    out = str(tmp_path / "out")
    argv = ["--source", "csv", "--input", data, "--label-column", "y", "--output", out]
    code, summary, text = run_json([*argv, streaming], capsys)
    assert code == 0, text
    assert summary["events_in"] == 300 == summary["predictions_out"] + summary["dead_lettered"]
    assert summary["dead_lettered"] == len(bad)
    reasons = {r["line"] - 2: r["reason"] for r in read_jsonl_dir(os.path.join(out, "dead_letter"))}
    assert reasons[40] == "label '7' in column 'y' is not a class in [0, 2)"
    assert reasons[90] == "label '-1' in column 'y' is not a class in [0, 2)"
    assert set(reasons) == set(bad)
    assert "classes: 2 (labels 0..1 seen in the first rows" in text


def test_num_classes_makes_a_label_a_class(tmp_path, capsys):
    labels = [str(i % 3) for i in range(200)]
    data = write_daily_csv(str(tmp_path / "three.csv"), 200, labels=labels)
    out = str(tmp_path / "out")
    argv = ["--source", "csv", "--input", data, "--label-column", "y", "--output", out]
    code, summary, _ = run_json([*argv, "--num-classes", "2"], capsys)
    assert code == 0 and summary["dead_lettered"] == 66  # every label 2
    code, summary, _ = run_json([*argv, "--overwrite"], capsys)  # from the data: 3 classes
    assert code == 0 and summary["dead_lettered"] == 0 and summary["predictions_out"] == 200


def test_a_rerun_into_a_used_output_is_refused_unless_overwrite(tmp_path, capsys):
    data = write_daily_csv(str(tmp_path / "daily.csv"), 120)
    out = str(tmp_path / "out")
    argv = ["--source", "csv", "--input", data, "--label-column", "y", "--output", out]
    code, first, _ = run_json([*argv, "--no-streaming"], capsys)
    assert code == 0
    mine = os.path.join(out, "notes.txt")  # not a run's file: left alone
    with open(mine, "w", encoding="utf-8") as f:
        f.write("mine")
    assert main.main([*argv, "--no-streaming", "--quiet"]) == main.EXIT_USAGE
    err = capsys.readouterr().err
    assert "is not empty" in err and "--overwrite" in err
    code, second, _ = run_json([*argv, "--no-streaming", "--overwrite"], capsys)
    # counted once: the earlier run's files were removed first
    assert code == 0 and second["predictions_out"] == first["predictions_out"] == 120
    assert second["model_versions"] == first["model_versions"]
    assert open(mine, encoding="utf-8").read() == "mine"
    # a folder no run wrote: --overwrite removes nothing from it
    theirs = tmp_path / "theirs"
    (theirs / "models").mkdir(parents=True)
    (theirs / "models" / "keep.bin").write_text("x")
    argv[argv.index(out)] = str(theirs)
    assert main.main([*argv, "--no-streaming", "--overwrite", "--quiet"]) == main.EXIT_USAGE
    assert "no earlier run's mark" in capsys.readouterr().err
    assert (theirs / "models" / "keep.bin").read_text() == "x"


def test_a_resumed_run_adds_to_the_stopped_runs_output(tmp_path):
    from pipelines import output_dir

    out = tmp_path / "out"
    output_dir.prepare(str(out), overwrite=False)
    (out / "predictions").mkdir()
    (out / "predictions" / "part-0.jsonl").write_text("{}")
    output_dir.prepare(str(out), overwrite=False, resume=True)  # nothing removed
    assert (out / "predictions" / "part-0.jsonl").exists()
    with pytest.raises(output_dir.OutputNotEmpty, match="--overwrite would remove it"):
        output_dir.prepare(str(out), overwrite=True, resume=True)
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "x").write_text("x")
    with pytest.raises(output_dir.OutputNotEmpty, match="no earlier run's files"):
        output_dir.prepare(str(theirs), overwrite=False, resume=True)


def test_a_savepoint_needs_flink(tmp_path, capsys):
    argv = ["--runner", "DirectRunner", "--savepoint", str(tmp_path), "--quiet"]
    assert main.main([*argv, "--output", str(tmp_path / "out")]) == main.EXIT_USAGE
    assert "--savepoint resumes a stopped Flink job" in capsys.readouterr().err


def _write_examples(path: str, rows: list[dict]) -> None:
    """``rows`` (feature name -> list of values) as a TFRecord file of tf.Examples,
    through tfx-bsl's encoder."""
    import pyarrow as pa
    from tfx_bsl.coders import example_coder

    from model.streams.tfrecord import write_records

    types = {"timestamp": pa.binary(), "y": pa.int64(), "event_id": pa.int64()}
    names = sorted({n for r in rows for n in r})
    batch = pa.record_batch(
        {n: pa.array([r.get(n) for r in rows], pa.list_(types.get(n, pa.float32()))) for n in names}
    )
    write_records(path, example_coder.RecordBatchToExamplesEncoder().encode(batch))


@pytest.mark.parametrize("streaming", ["--streaming", "--no-streaming"])
def test_a_tfrecord_file_is_read_as_the_same_csv_is(tmp_path, capsys, streaming):
    from model.streams.tfrecord import read_records

    csv_path = write_daily_csv(str(tmp_path / "daily.csv"), 200)
    # the same rows as tf.Examples (the CSV's features renamed to sort as they come)
    with open(csv_path, encoding="utf-8") as f:
        lines = f.read().splitlines()[1:]
    rows = []
    for line_no, line in enumerate(lines, start=2):
        day, a, b, c, y = line.split(",")
        rows.append({"timestamp": [day.encode()], "f1": [float(a)], "f2": [float(b)],
                     "f3": [float(c)], "y": [int(y)], "event_id": [line_no]})  # fmt: skip
    bad = [
        {"timestamp": [b"1961-08-01"], "f1": [1.0], "f2": [2.0], "y": [0]},  # f3 missing
        {"timestamp": [b"1961-08-02"], "f1": [1.0, 2.0], "f2": [2.0], "f3": [3.0], "y": [0]},
        {"timestamp": [b"1961-08-03"], "f1": [1.0], "f2": [2.0], "f3": [3.0], "y": [9]},
    ]
    tf_path = str(tmp_path / "daily.tfrecord")
    _write_examples(tf_path, rows + bad)
    with open(tf_path, "rb") as f:
        assert len(list(read_records(f))) == 203
    renamed = str(tmp_path / "renamed.csv")
    with open(renamed, "w", encoding="utf-8") as f:
        f.write("\n".join(["timestamp,f1,f2,f3,y", *lines]) + "\n")

    def run(source: str, path: str, name: str) -> dict:
        out = str(tmp_path / name)
        argv = ["--source", source, "--input", path, "--label-column", "y", "--output", out]
        code, summary, text = run_json([*argv, streaming, "--num-classes", "2"], capsys)
        assert code == 0, text
        return summary

    from_tf = run("tfrecord", tf_path, "tf")
    from_csv = run("csv", renamed, "csv")
    assert from_tf["events_in"] == 203 and from_tf["dead_lettered"] == 3 and from_tf["balanced"]
    reasons = sorted(r["reason"] for r in read_jsonl_dir(str(tmp_path / "tf" / "dead_letter")))
    assert reasons == [
        "feature 'f1' has 2 values, expected 1",
        "feature 'f3' is missing",
        "label '9' in column 'y' is not a class in [0, 2)",
    ]
    # the same events, learned and scored the same
    assert from_tf["windows"] == from_csv["windows"]
    from pipelines.summary import predictions_by_event

    assert predictions_by_event(str(tmp_path / "tf")) == predictions_by_event(str(tmp_path / "csv"))


def test_a_corrupt_tfrecord_is_dead_lettered_not_a_crash(tmp_path):
    from model.streams.csv_parse import CsvFormat
    from model.streams.tfrecord import parse_tfrecord

    path = str(tmp_path / "x.tfrecord")
    rows = [{"timestamp": [f"1961-01-{d:02d}".encode()], "f1": [1.0], "y": [0]} for d in (1, 2, 3)]
    _write_examples(path, rows)
    data = bytearray(open(path, "rb").read())
    data[len(data) // 2] ^= 0xFF  # flip a byte of the second record
    open(path, "wb").write(bytes(data))
    chunks = list(parse_tfrecord(path, CsvFormat(label_column="y")))
    good = sum(c.batch.num_rows for c in chunks if c.batch is not None)
    dead = [d for c in chunks for d in c.dead]
    assert good + len(dead) == 3 and len(dead) == 1 and "CRC" in dead[0].reason
    # a record with a good frame that is not a tf.Example: a dead letter too
    from model.streams.tfrecord import write_records

    records = [open(path, "rb").read()[:0] or b"\x0a\x05garbage", b"\xff\xfe"]
    junk = str(tmp_path / "junk.tfrecord")
    write_records(junk, records)
    chunks = list(parse_tfrecord(junk, CsvFormat(label_column="y")))
    dead = [d for c in chunks for d in c.dead]
    assert len(dead) == 2 and all("not a tf.Example" in d.reason for d in dead)


@pytest.mark.parametrize("streaming", ["--streaming", "--no-streaming"])
@pytest.mark.parametrize("mode", ["decoupled", "coupled"])
def test_a_sparse_stream_runs_in_frames_and_keeps_its_windows(tmp_path, capsys, streaming, mode):
    # one event per window: a day's row in windows of one day
    data = write_daily_csv(str(tmp_path / "daily.csv"), 300)
    argv = ["--source", "csv", "--input", data, "--label-column", "y", "--window-size", "86400"]
    argv += ["--mode", mode, streaming]
    runs = {}
    for frame in ("auto", "1"):
        out = str(tmp_path / f"out-{frame}")
        extra = [] if frame == "auto" else ["--frame", frame]
        code, summary, text = run_json([*argv, "--output", out, *extra], capsys)
        assert code == 0 and summary["balanced"] and summary["predictions_out"] == 300
        runs[frame] = summary, text, read_jsonl_dir(os.path.join(out, "windows"))
    framed, _, framed_rows = runs["auto"]
    plain, plain_text, plain_rows = runs["1"]
    # the default put 32 windows (days) to a Beam window, where a decoupled scorer waits
    # for each frame's model, and 4,096 where none waits (coupled), and said so; --frame 1
    # did not
    frame = 32 if mode == "decoupled" else 4096
    assert f"note: frames: {frame} windows to a Beam window of {frame} days" in runs["auto"][1]
    assert "frames:" not in plain_text
    # 300 window lines would bury the summary: the first and last 24, and a count
    assert "  ... 252 windows more (all in metrics.json and windows/)" in plain_text
    assert plain_text.count("  1961-") + plain_text.count("  1960-") <= 48
    # still one statistics row per day window, each of one event, as without frames
    assert {r["window_end_us"] - r["window_start_us"] for r in framed_rows} == {86_400 * 10**6}
    assert len(framed["windows"]) == len(plain["windows"]) == 300
    assert [(w["start_us"], w["events"], w["labelled"]) for w in framed["windows"]] == [
        (w["start_us"], w["events"], w["labelled"]) for w in plain["windows"]
    ]
    # a version per frame at most, not one per window
    assert framed["model_versions"] <= 300 / frame + 2 < plain["model_versions"]
    # and the frames learn: the later windows are mostly right
    late = framed["windows"][150:]
    assert sum(w["correct"] for w in late) / sum(w["labelled"] for w in late) > 0.7


@pytest.mark.parametrize("policy", ["reset", "lr-boost", "background"])
def test_every_adaptation_policy_runs_from_the_command_line(tmp_path, capsys, policy):
    data = write_daily_csv(str(tmp_path / "daily.csv"), 300)
    argv = ["--source", "csv", "--input", data, "--label-column", "y", "--adapt", policy]
    code, summary, _ = run_json([*argv, "--output", str(tmp_path / "out")], capsys)
    assert code == 0 and summary["balanced"] and summary["predictions_out"] == 300
    late = [w for w in summary["windows"][len(summary["windows"]) // 2 :] if w["labelled"]]
    assert sum(w["correct"] for w in late) / sum(w["labelled"] for w in late) > 0.7


@pytest.mark.parametrize("streaming", ["--streaming", "--no-streaming"])
def test_delayed_labels_are_evaluated_on_the_join_and_never_learned_early(
    tmp_path, capsys, streaming
):
    from model import batch as mb
    from transforms.io import ModelStore, read_parquet_dir

    data = write_daily_csv(str(tmp_path / "daily.csv"), 300)
    out = str(tmp_path / "out")
    day = 86_400
    argv = ["--source", "csv", "--input", data, "--label-column", "y", "--output", out]
    argv += ["--label-delay", str(45 * day), streaming]  # a label comes 45 days late
    code, summary, text = run_json(argv, capsys)
    assert code == 0 and summary["balanced"] and summary["predictions_out"] == 300
    # every prediction was evaluated on its label, when it came
    assert summary["labels_joined"] == 300 and summary["never_labelled"] == 0
    assert "never labelled              0  (predictions = joined + never: ok)" in text
    evaluation = read_jsonl_dir(os.path.join(out, "evaluation"))
    assert sum(r["events"] for r in evaluation) == sum(r["labelled"] for r in evaluation) == 300
    labelled = sum(w["labelled"] for w in summary["windows"])
    assert labelled == 300 and summary["windows"][0]["events"] > 0
    # no prediction was made by a model that had learned a label not yet known when
    # its window began: a version learned each label at its event time + 45 days
    store = ModelStore(os.path.join(out, "models"))
    known_by = {v: store.load(v).trained_until_us for v in store.versions()}
    table = read_parquet_dir(os.path.join(out, "predictions"))
    window_us = 28 * day * 10**6
    for t, version in zip(
        table.column(mb.EVENT_TIME).to_pylist(),
        table.column("model_version").to_pylist(),
        strict=True,
    ):
        t_us = int(t.timestamp() * 10**6)
        if version:
            assert known_by[version] < t_us // window_us * window_us, (t, version)
    # the first windows (labels not yet known) were scored by the untrained model
    assert summary["windows"][1]["max_version"] == 0
    # and later the stream is learned all the same
    late = summary["windows"][len(summary["windows"]) // 2 :]
    assert sum(w["correct"] for w in late) / sum(w["labelled"] for w in late) > 0.7


def write_label_file(
    data: str, events: str, labels: str, *, seed: int = 0, max_wait_days: int = 60
) -> dict[str, int]:
    """``data`` (a labelled daily CSV) parted into ``events`` (no labels) and a labels
    file ``labels`` whose labels come 1 to ``max_wait_days`` days after their events,
    where every 50th event gets no label, and four rows are bad: a label for no
    event, a label that is no class, one known before its event, a second label for an
    event. Returns how many of each there are."""
    rng = np.random.default_rng(seed)
    with open(data, encoding="utf-8") as f:
        header, *rows = f.read().splitlines()
    with open(events, "w", encoding="utf-8") as f:
        f.write("\n".join(",".join(r.split(",")[:-1]) for r in [header, *rows]) + "\n")
    lines = ["event_id,timestamp,y,label_time"]
    day = dt.timedelta(days=1)
    for i, row in enumerate(rows):
        fields = row.split(",")
        if i % 50 == 7:
            continue
        known = dt.date.fromisoformat(fields[0]) + int(rng.integers(1, max_wait_days + 1)) * day
        lines.append(f"{i + 2},{fields[0]},{fields[-1]},{known.isoformat()}")  # id: line number
    first = rows[0].split(",")[0]
    lines += [
        f"99999,{first},1,{first}",  # for no event
        f"3,{first},7,{first}",  # no class
        f"4,{first},1,1960-01-01",  # known before its event
        f"2,{first},0,{first}",  # the event's second label
    ]
    rng.shuffle(lines[1:])  # a labels file in no particular order
    with open(labels, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return {"events": len(rows), "labelled": len(lines) - 5, "rows": len(lines) - 1}


@pytest.mark.parametrize("streaming", ["--streaming", "--no-streaming"])
def test_labels_from_a_file_are_joined_counted_and_learned_when_known(tmp_path, capsys, streaming):
    from model import batch as mb
    from transforms.io import ModelStore, read_parquet_dir

    data = write_daily_csv(str(tmp_path / "full.csv"), 300)
    events, labels = str(tmp_path / "daily.csv"), str(tmp_path / "labels.csv")
    counts = write_label_file(data, events, labels)
    out = str(tmp_path / "out")
    argv = ["--source", "csv", "--input", events, "--labels", labels, "--label-column", "y"]
    code, summary, text = run_json([*argv, "--output", out, streaming], capsys)
    assert code == 0 and summary["balanced"] and summary["predictions_out"] == 300
    # predictions = joined + never labelled; labels in = joined + rejected
    assert summary["labels_joined"] == counts["labelled"] == 294
    assert summary["never_labelled"] == counts["events"] - counts["labelled"]
    assert summary["labels_joined"] + summary["labels_rejected"] == counts["rows"]
    rejected = read_jsonl_dir(os.path.join(out, "label_dead_letter"))
    reasons = sorted(r["reason"].split(" (")[0] for r in rejected)
    assert reasons == [
        "duplicate label",
        "label '7' in column 'y' is not a class in [0, 2)",
        "label for an unknown event",
        "label known before its event",
    ]
    assert "label wait: 60 days (the longest an event waits" in text  # chosen from the file
    # no version had learned a label that was not known when the window it scored began
    store = ModelStore(os.path.join(out, "models"))
    known_by = {v: store.load(v).trained_until_us for v in store.versions()}
    table = read_parquet_dir(os.path.join(out, "predictions"))
    window_us = 28 * 86_400 * 10**6
    times = table.column(mb.EVENT_TIME).cast("int64").to_numpy()
    for t_us, version in zip(times, table.column("model_version").to_pylist(), strict=True):
        if version:
            assert known_by[version] < t_us // window_us * window_us
    late = summary["windows"][len(summary["windows"]) // 2 :]
    assert sum(w["correct"] for w in late) / sum(w["labelled"] for w in late) > 0.7


def test_labels_known_past_the_wait_are_set_aside_and_counted(tmp_path, capsys):
    data = write_daily_csv(str(tmp_path / "full.csv"), 300)
    events, labels = str(tmp_path / "daily.csv"), str(tmp_path / "labels.csv")
    counts = write_label_file(data, events, labels, max_wait_days=120)
    out = str(tmp_path / "out")
    argv = ["--source", "csv", "--input", events, "--labels", labels, "--label-column", "y"]
    argv += ["--label-wait", "0", "--allowed-lateness", "0", "--streaming", "--output", out]
    code, summary, _ = run_json(argv, capsys)
    assert code == 0 and summary["balanced"]
    # the labels that came too long after their events were given up on, and counted
    assert 0 < summary["labels_joined"] < counts["labelled"]
    assert summary["labels_joined"] + summary["never_labelled"] == 300
    assert summary["labels_joined"] + summary["labels_rejected"] == counts["rows"]
    reasons = {
        r["reason"].split(" (")[0] for r in read_jsonl_dir(os.path.join(out, "label_dead_letter"))
    }
    assert "late: window expired" in reasons  # came after its event's window expired


def test_a_labels_file_is_the_one_place_labels_come_from(tmp_path, capsys):
    data = write_daily_csv(str(tmp_path / "full.csv"), 50)
    events, labels = str(tmp_path / "daily.csv"), str(tmp_path / "labels.csv")
    write_label_file(data, events, labels)
    out = ["--output", str(tmp_path / "o"), "--quiet"]
    with_labels = ["--labels", labels, "--label-column", "y"]
    # the events carry the labels too: which would the model see as a feature?
    assert main.main(["--source", "csv", "--input", data, *with_labels, *out]) == 3
    assert "has the label column 'y', and --labels gives the labels" in capsys.readouterr().err
    assert (
        main.main(["--source", "csv", "--input", events, *with_labels, "--label-delay", "5", *out])
        == 2
    )
    assert "labels come from a labels file or after a delay, not both" in capsys.readouterr().err
    assert main.main([*with_labels, *out]) == 2  # the synthetic source
    assert "goes with --source csv or tfrecord" in capsys.readouterr().err


def test_delayed_labels_need_the_decoupled_mode(tmp_path, capsys):
    data = write_daily_csv(str(tmp_path / "daily.csv"), 50)
    argv = ["--source", "csv", "--input", data, "--label-column", "y", "--label-delay", "60"]
    code = main.main([*argv, "--mode", "coupled", "--output", str(tmp_path / "o"), "--quiet"])
    assert code == 2
    assert "delayed labels need mode='decoupled'" in capsys.readouterr().err


@pytest.mark.parametrize("streaming", ["--streaming", "--no-streaming"])
def test_a_new_class_mid_stream_is_learned_with_grow(tmp_path, capsys, streaming):
    from transforms.io import read_parquet_dir

    data = write_daily_csv(str(tmp_path / "new.csv"), 700)
    with open(data, encoding="utf-8") as f:
        header, *rows = f.read().splitlines()
    for i in range(400, 700):  # from row 400 on, strong wind is a class of its own
        fields = rows[i].split(",")
        if float(fields[3]) > 5:
            rows[i] = ",".join([*fields[:4], "2"])
    rows[500] = ",".join([*rows[500].split(",")[:4], "150"])  # beyond --max-classes
    with open(data, "w", encoding="utf-8") as f:
        f.write("\n".join([header, *rows]) + "\n")
    new = sum(r.endswith(",2") for r in rows)
    argv = ["--source", "csv", "--input", data, "--label-column", "y", streaming]
    argv += ["--num-classes", "2"]  # the classes the stream starts with
    code, summary, _ = run_json([*argv, "--output", str(tmp_path / "dl")], capsys)
    assert code == 0 and summary["balanced"] and summary["dead_lettered"] == new + 1
    out = str(tmp_path / "grow")
    grow = ["--new-classes", "grow", "--max-classes", "10"]
    code, summary, text = run_json([*argv, *grow, "--output", out], capsys)
    assert code == 0, text
    assert summary["balanced"] and summary["events_in"] == 700 == summary["predictions_out"] + 1
    reasons = [r["reason"] for r in read_jsonl_dir(os.path.join(out, "dead_letter"))]
    assert reasons == ["label '150' in column 'y' is not a class in [0, 10)"]
    table = read_parquet_dir(os.path.join(out, "predictions")).sort_by("event_id")
    predicted = np.array(table.column("prediction").to_pylist())
    truth = np.array(table.column("label").to_pylist())
    tail = slice(550, None)  # after the model had time to learn the new class
    assert not (predicted[:400] == 2).any()
    assert (predicted[tail][truth[tail] == 2] == 2).mean() > 0.5
