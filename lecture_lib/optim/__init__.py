"""Optimizers as chains of gradient transformations (optax style), plus a torch.optim adapter.

* :mod:`.base` -- ``Transform``, ``chain``, ``apply_updates``, ``functional_step`` and helpers.
* :mod:`.transforms` -- the building blocks: learning rate, momentum, RMS/Adam preconditioners,
  weight decay, LARS trust ratio, projection to the unit sphere, masking.
* :mod:`.grafting` -- ``graft(magnitude, direction)``.
* :mod:`.alias` -- ``sgd``, ``sgdw``, ``rmsprop``, ``adam``, ``adamw``, ``lars`` and ``get(name, **hparams)``.
* :mod:`.torch_adapter` -- ``TransformOptimizer`` for ordinary PyTorch loops and LR schedulers.
"""
from .alias import OPTIMIZERS, adam, adamw, get, lars, rmsprop, sgd, sgdw
from .base import (EmptyState, Mask, Params, Transform, apply_updates, chain, check_runs, functional_step, per_run,
                   resolve_mask, run_norm, stateless)
from .grafting import GraftState, graft
from .torch_adapter import TransformOptimizer
from .transforms import (MaskedState, ScaleByAdamState, ScaleByLrState, ScaleByRmsState, TraceState,
                         add_decayed_weights, identity, masked, project_to_unit_norm, scale_by_adam, scale_by_lr,
                         scale_by_rms, scale_by_trust_ratio, trace)

# --- K-FAC (teammate "kfac"): add `from .kfac import ...` below this line -------------------------
from .kfac import (KFACState, estimate_factors, kfac, kfac_layers, kfac_precondition, kron_damped_solve, layer_taps,
                   observe)
