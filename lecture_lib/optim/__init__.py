"""Optimizers as chains of gradient transformations (optax style), plus a torch.optim adapter.

* :mod:`.base` -- ``Transform``, ``chain``, ``apply_updates``, ``functional_step`` and helpers.
* :mod:`.transforms` -- the building blocks: learning rate, momentum, RMS/Adam preconditioners,
  weight decay, LARS trust ratio, projection to the unit sphere, masking.
* :mod:`.grafting` -- ``graft(magnitude, direction)``.
* :mod:`.kfac_transform` -- K-FAC: ``kfac_precondition`` (a transform whose update takes
  ``batch=(x, y)``), the eigenbasis solve ``kron_damped_solve`` and ``eigh_factor``.
* :mod:`.alias` -- ``sgd``, ``sgdw``, ``rmsprop``, ``adam``, ``adamw``, ``lars``, ``kfac`` and
  ``get(name, **hparams)``, the one factory by name.
* :mod:`.torch_adapter` -- ``TransformOptimizer`` for ordinary PyTorch loops and LR schedulers.

The factors K-FAC preconditions with (``estimate_factors``, ``layer_taps``, ``CURVATURES``) are
curvature, not optimizer: they live in :mod:`lecture_lib.kfac_statistics` and are re-exported here.
"""
from ..kfac_statistics import CURVATURES, estimate_factors, kfac_layers, layer_taps
from .alias import CURVATURE_OPTIMIZERS, NAMES, OPTIMIZERS, adam, adamw, get, kfac, lars, rmsprop, sgd, sgdw
from .base import (EmptyState, Mask, Params, Transform, apply_updates, chain, check_runs, find_state,
                   functional_step, per_run, resolve_mask, run_norm, stack_runs, stateless)
from .grafting import GraftState, graft
from .kfac_transform import FALLBACKS, KFACState, eigh_factor, kfac_precondition, kron_damped_solve
from .torch_adapter import TransformOptimizer
from .transforms import (MaskedState, ScaleByAdamState, ScaleByLrState, ScaleByRmsState, TraceState,
                         add_decayed_weights, identity, masked, project_to_unit_norm, scale_by_adam, scale_by_lr,
                         scale_by_rms, scale_by_trust_ratio, trace)
