"""Budgeted training: accumulation equals one large batch; OOMs split, nothing skipped."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from model.backpressure import Accumulating, CreditBased, FixedSize, Unbounded
from model.budgeted import BudgetedTrainer
from model.memory import TensorMemory


class _SeqModel(nn.Module):
    """Variable-length sequences, padded per micro-batch and masked."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.inp = nn.Linear(1, 16)
        self.enc = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
        self.out = nn.Linear(16, 1)

    def loss(self, seqs: list[torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
        length = max(len(s) for s in seqs)
        x = torch.zeros(len(seqs), length, 1)
        pad = torch.ones(len(seqs), length, dtype=torch.bool)
        for i, s in enumerate(seqs):
            x[i, : len(s), 0] = s
            pad[i, : len(s)] = False
        h = self.enc(self.inp(x), src_key_padding_mask=pad)
        keep = (~pad).unsqueeze(-1).float()
        pooled = (h * keep).sum(1) / keep.sum(1)
        return ((self.out(pooled).squeeze(-1) - targets) ** 2).mean()


def _data(n: int = 24) -> tuple[list[torch.Tensor], torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    lengths = [4 + int(torch.randint(0, 20, (1,), generator=g)) for _ in range(n)]
    seqs = [torch.randn(length, generator=g) for length in lengths]
    return seqs, torch.randn(n, generator=g)


def _train(controller, signal=None, batches: int = 3) -> tuple[_SeqModel, list]:
    model = _SeqModel()
    trainer = BudgetedTrainer(
        model.parameters(),
        torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9),
        controller,
        signal or TensorMemory(),
    )
    seqs, y = _data()
    reports = []
    for _ in range(batches):
        reports.append(
            trainer.fit([float(len(s)) for s in seqs], lambda rows: _loss(model, seqs, y, rows))
        )
    return model, reports


def _loss(model: _SeqModel, seqs: list[torch.Tensor], y: torch.Tensor, rows: list[int]):
    return model.loss([seqs[i] for i in rows], y[rows])


def _params(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_accumulation_gives_the_gradients_of_one_large_batch() -> None:
    whole, whole_reports = _train(Unbounded())
    pieces, piece_reports = _train(Accumulating(FixedSize(5)))
    assert [r.micro_batches for r in whole_reports] == [1, 1, 1]
    assert [r.micro_batches for r in piece_reports] == [5, 5, 5]
    assert [r.optimizer_steps for r in piece_reports] == [1, 1, 1]
    torch.testing.assert_close(_params(pieces), _params(whole), atol=1e-6, rtol=1e-5)
    for a, b in zip(whole_reports, piece_reports, strict=True):
        assert a.loss == pytest.approx(b.loss, rel=1e-5)


def test_without_accumulation_every_micro_batch_is_a_step() -> None:
    model, reports = _train(FixedSize(5), batches=1)
    assert reports[0].micro_batches == reports[0].optimizer_steps == 5
    whole, _ = _train(Unbounded(), batches=1)
    assert not torch.allclose(_params(model), _params(whole))


def test_an_out_of_memory_error_splits_and_trains_on_every_sample() -> None:
    free, _ = _train(Unbounded(), batches=1)
    seen: list[list[int]] = []
    model = _SeqModel()
    seqs, y = _data()

    def loss_of(rows: list[int]) -> torch.Tensor:
        seen.append(list(rows))
        return _loss(model, seqs, y, rows)

    probe = TensorMemory()
    with probe.step():
        model.loss(seqs, y).backward()
    model.zero_grad(set_to_none=True)
    cap = probe.reading().peak_bytes // 3
    trainer = BudgetedTrainer(
        model.parameters(),
        torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9),
        Unbounded(),
        TensorMemory(cap, cap_bytes=cap),
    )
    report = trainer.fit([float(len(s)) for s in seqs], loss_of)
    assert report.ooms >= 2 and report.samples == 24
    assert report.peak_bytes <= cap
    # a call failed when the next one retries from the same row; the rest cover the
    # batch, every sample exactly once
    completed = [
        rows for i, rows in enumerate(seen) if i + 1 == len(seen) or seen[i + 1][0] != rows[0]
    ]
    assert sorted(i for rows in completed for i in rows) == list(range(24))
    assert report.micro_batches == len(completed) and len(seen) == len(completed) + report.ooms
    # it accumulated, so the step equals the unbounded one without a cap
    torch.testing.assert_close(_params(model), _params(free), atol=1e-6, rtol=1e-5)


def test_a_single_sample_that_does_not_fit_is_an_error() -> None:
    model = _SeqModel()
    seqs, y = _data(4)
    trainer = BudgetedTrainer(
        model.parameters(),
        torch.optim.SGD(model.parameters(), lr=0.1),
        CreditBased(1000),
        TensorMemory(1000, cap_bytes=1000),
    )
    with pytest.raises(torch.OutOfMemoryError):
        trainer.fit([1.0] * 4, lambda rows: _loss(model, seqs, y, rows))


def test_credit_accumulation_stays_under_budget_through_a_burst() -> None:
    model = _SeqModel()
    g = torch.Generator().manual_seed(2)
    short = [torch.randn(8, generator=g) for _ in range(32)]
    long = [torch.randn(80, generator=g) for _ in range(32)]
    y = torch.randn(32, generator=g)
    probe = TensorMemory()
    with probe.step():
        model.loss(short[:16], y[:16]).backward()
    model.zero_grad(set_to_none=True)
    budget = probe.reading().peak_bytes
    trainer = BudgetedTrainer(
        model.parameters(),
        torch.optim.SGD(model.parameters(), lr=0.01),
        Accumulating(CreditBased(budget)),
        TensorMemory(budget),
    )
    reports = [
        trainer.fit([float(len(s)) for s in seqs], lambda rows, s=seqs: _loss(model, s, y, rows))
        for seqs in (short, short, short, long, long, short)
    ]
    assert sum(r.violations for r in reports) == 0
    assert all(r.optimizer_steps == 1 for r in reports)
    assert reports[3].micro_batches > reports[2].micro_batches
