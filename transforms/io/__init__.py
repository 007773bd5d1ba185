"""Getting micro-batches in and out: sources, replays, sinks, coders, the model store."""

from transforms.io.coders import DeadLetterCoder, ModelArtifactCoder, RecordBatchCoder
from transforms.io.model_store import ModelStore
from transforms.io.replay import SourceOut, WatermarkPacer, replay
from transforms.io.sinks import (
    WriteBatches,
    WriteRecords,
    count_parquet_rows,
    read_jsonl_dir,
    read_parquet_dir,
)
from transforms.io.sources import CsvSource, SyntheticSource, stamped

__all__ = [
    "CsvSource",
    "DeadLetterCoder",
    "ModelArtifactCoder",
    "ModelStore",
    "RecordBatchCoder",
    "SourceOut",
    "SyntheticSource",
    "WatermarkPacer",
    "WriteBatches",
    "WriteRecords",
    "count_parquet_rows",
    "read_jsonl_dir",
    "read_parquet_dir",
    "replay",
    "stamped",
]
