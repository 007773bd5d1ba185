"""Config files, option-named validation errors and exit codes."""

from __future__ import annotations

import os

import pytest

from pipelines import main
from pipelines.cli import UsageError, build_parser, load_config_file, parse_args


def test_help_lists_pipelines_and_their_options(capsys):
    with pytest.raises(SystemExit):
        main.main(["--help"])
    text = capsys.readouterr().out
    assert "classify:" in text and "score:" in text
    assert "online learning (classify)" in text and "--config" in text


def test_config_file_values_and_command_line_overrides(tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("window-size: 5\nlate_fraction: 0.02\nmode: coupled\ninput: [a.csv, b.csv]\n")
    args = parse_args(["--config", str(cfg), "--window-size", "20"])
    assert args.window_size == 20.0  # the command line wins
    assert args.late_fraction == 0.02 and args.mode == "coupled"
    assert args.input == ["a.csv", "b.csv"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("windowsize: 5\n", "unknown option 'windowsize'"),
        ("window-size: ten\n", "window-size: bad value 'ten'"),
        ("mode: both\n", "mode: 'both' is not one of"),
        ("- just\n- a list\n", "must hold a mapping"),
    ],
)
def test_bad_config_files_name_the_problem(tmp_path, text, message):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(text)
    with pytest.raises(UsageError, match=message):
        load_config_file(build_parser(), str(cfg))


def test_exit_codes(tmp_path, capsys):
    out = str(tmp_path / "out")
    assert main.main(["--window-size", "-3", "--output", out]) == main.EXIT_USAGE
    err = capsys.readouterr().err
    assert "--window/--window-size" in err and "window size must be > 0, got -3.0" in err
    assert main.main(["--device", "tpu", "--output", out]) == main.EXIT_USAGE
    assert main.main(["--step-rows", "-1", "--output", out]) == main.EXIT_USAGE
    assert "--step-rows" in capsys.readouterr().err
    assert main.main(["--watermark-interval", "-1", "--output", out]) == main.EXIT_USAGE
    assert "--watermark-interval: must be >= 0 seconds" in capsys.readouterr().err
    assert (
        main.main(["--source", "csv", "--input", str(tmp_path / "nope.csv")]) == main.EXIT_BAD_INPUT
    )
    bad_header = tmp_path / "h.csv"
    bad_header.write_text("when,what\n1,2\n")
    args = ["--source", "csv", "--input", str(bad_header), "--output", out]
    assert main.main([*args, "--label-column", "what"]) == main.EXIT_BAD_INPUT
    assert "time column 'timestamp' not in header" in capsys.readouterr().err
    # The classify pipeline cannot learn without labels: a usage error, before running.
    assert main.main([*args, "--time-column", "when"]) == main.EXIT_USAGE


def test_runtime_failure_has_its_own_exit_code(tmp_path, monkeypatch, capsys):
    def boom(*_args, **_kwargs):
        raise RuntimeError("worker lost")

    monkeypatch.setattr(main, "run", boom)
    assert main.main(["--output", str(tmp_path)]) == main.EXIT_RUNTIME
    assert "pipeline failed: RuntimeError: worker lost" in capsys.readouterr().err


def test_unknown_keys_are_dead_lettered(tmp_path):
    data = tmp_path / "k.csv"
    rows = [f"2026-01-01 00:00:{i:02d},{'a' if i % 3 else 'zz'},{i},1" for i in range(30)]
    data.write_text("timestamp,key,x,label\n" + "\n".join(rows) + "\n")
    out = str(tmp_path / "out")
    args = ["--pipeline", "score", "--source", "csv", "--input", str(data), "--output", out]
    assert (
        main.main([*args, "--label-column", "label", "--allowed-keys", "a,b", "--no-streaming"])
        == 0
    )
    from transforms.io import read_jsonl_dir

    dead = read_jsonl_dir(os.path.join(out, "dead_letter"))
    assert len(dead) == 10 and {d["reason"] for d in dead} == {"unknown key 'zz'"}
