"""Incremental learning: a learner that trains any ``nn.Module`` one micro-batch at a
time, and its parts.

- :class:`IncrementalLearner` and its :class:`LearnerConfig` (:mod:`.learner`);
- the backends that compute its steps (:mod:`.backend`): autograd, or the fused MLP
  kernel (:class:`FusedMLP`, :mod:`.fused`, in C where it builds: :mod:`.native`);
- :class:`Reservoir` replay (:mod:`.replay`), :class:`OnlineEWC` (:mod:`.ewc`),
  :class:`RunningScaler` (:mod:`.scaler`) and the published :class:`Standardized`
  model (:mod:`.standardized`);
- :func:`dumps_state` / :func:`loads_state`: the bytes of any of their ``snapshot()``
  states (:mod:`.state_bytes`).
"""

from model.learn.backend import AutogradBackend, Backend, FusedBackend, make_backend
from model.learn.ewc import OnlineEWC
from model.learn.fused import FusedMLP, mlp_linears, optimizer_supported
from model.learn.learner import IncrementalLearner, LearnerConfig
from model.learn.replay import Reservoir
from model.learn.scaler import RunningScaler
from model.learn.standardized import Standardized, StandardizedFactory
from model.learn.state_bytes import dumps_state, loads_state

__all__ = [
    "AutogradBackend",
    "Backend",
    "FusedBackend",
    "FusedMLP",
    "IncrementalLearner",
    "LearnerConfig",
    "OnlineEWC",
    "Reservoir",
    "RunningScaler",
    "Standardized",
    "StandardizedFactory",
    "dumps_state",
    "loads_state",
    "make_backend",
    "mlp_linears",
    "optimizer_supported",
]
