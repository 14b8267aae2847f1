"""The one table of optimizer cases shared by the optimizer tests.

Each case names an alias of :mod:`lecture_lib.optim`, gives ``R = 4`` values per
hyperparameter (one per run, in the alias's own names), and, where PyTorch
implements the same algorithm, the ``torch.optim`` class that is the reference
answer. ``tiny_mlp_problem`` is the small float64 problem they are run on.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

RUNS = 4


@dataclass(frozen=True)
class Case:
    id: str
    alias: str                                  # key of lecture_lib.optim.OPTIMIZERS
    grid: dict                                  # hyperparameter -> RUNS values (``betas``: RUNS pairs)
    torch_cls: type | None = None               # torch.optim reference, if the algorithm is the same
    torch_names: dict = field(default_factory=dict)  # our name -> torch's name, where they differ
    fixed: dict = field(default_factory=dict)   # non-numeric arguments (e.g. nesterov)

    def ours(self, run: int | None = None) -> dict:
        """Our alias's kwargs: run ``run``'s floats, or (``run=None``) every run at once as ``(R,)`` tensors."""
        kwargs = dict(self.fixed)
        for name, values in self.grid.items():
            if run is not None:
                kwargs[name] = values[run]
            elif name == "betas":
                kwargs[name] = tuple(torch.tensor(v, dtype=torch.float64) for v in zip(*values))
            else:
                kwargs[name] = torch.tensor(values, dtype=torch.float64)
        return kwargs

    def theirs(self, run: int) -> dict:
        """The reference ``torch.optim`` kwargs for run ``run``."""
        return {self.torch_names.get(k, k): v for k, v in self.ours(run).items()}


LR = [0.1, 0.05, 0.2, 0.02]
MOMENTUM = [0.9, 0.5, 0.0, 0.99]
WEIGHT_DECAY = [1e-2, 0.0, 0.1, 5e-4]
BETAS = [(0.9, 0.999), (0.8, 0.99), (0.0, 0.9), (0.95, 0.5)]
EPS = [1e-8, 1e-3, 1e-6, 1e-8]

CASES = [
    Case("sgd", "sgd", {"lr": LR}, torch.optim.SGD),
    Case("sgd-momentum", "sgd", {"lr": LR, "momentum": MOMENTUM}, torch.optim.SGD),
    Case("sgd-nesterov", "sgd", {"lr": LR, "momentum": [0.9, 0.5, 0.3, 0.99]}, torch.optim.SGD, fixed={"nesterov": True}),
    Case("sgd-momentum-l2", "sgd", {"lr": LR, "momentum": MOMENTUM, "weight_decay": WEIGHT_DECAY},
         torch.optim.SGD),
    Case("rmsprop", "rmsprop", {"lr": [1e-2, 3e-3, 3e-2, 1e-3], "beta2": [0.99, 0.9, 0.5, 0.999], "eps": EPS},
         torch.optim.RMSprop, torch_names={"beta2": "alpha"}),
    Case("rmsprop-momentum-l2", "rmsprop",
         {"lr": [1e-2, 3e-3, 3e-2, 1e-3], "beta2": [0.99, 0.9, 0.5, 0.999], "momentum": MOMENTUM,
          "weight_decay": WEIGHT_DECAY}, torch.optim.RMSprop, torch_names={"beta2": "alpha"}),
    Case("adam", "adam", {"lr": [1e-2, 3e-3, 3e-2, 1e-3], "betas": BETAS, "eps": EPS}, torch.optim.Adam),
    Case("adam-l2", "adam", {"lr": [1e-2, 3e-3, 3e-2, 1e-3], "betas": BETAS, "weight_decay": WEIGHT_DECAY},
         torch.optim.Adam),
    Case("adamw", "adamw", {"lr": [1e-2, 3e-3, 3e-2, 1e-3], "betas": BETAS, "weight_decay": WEIGHT_DECAY},
         torch.optim.AdamW),
    # No torch.optim counterpart: checked against their formulas and for batched == separate runs.
    Case("sgdw-momentum", "sgdw", {"lr": LR, "momentum": MOMENTUM, "weight_decay": WEIGHT_DECAY}),
    Case("lars", "lars", {"lr": [1.0, 2.0, 0.5, 5.0], "momentum": MOMENTUM, "weight_decay": WEIGHT_DECAY,
                          "trust_coefficient": [1e-2, 1e-3, 5e-2, 1e-2]}),
]
TORCH_CASES = [c for c in CASES if c.torch_cls is not None]


def tiny_mlp_problem(seed: int = 0):
    """A 3-5-2 tanh network with squared error on 16 fixed examples, in float64.

    Returns ``(init, loss)``: ``init`` holds one set of weights *without* a run
    dimension; ``loss(params)`` takes weights *with* a leading run dimension and
    returns the ``(R,)`` per-run losses (runs never interact).
    """
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(16, 3, generator=g, dtype=torch.float64)
    y = torch.randn(16, 2, generator=g, dtype=torch.float64)
    init = {"w1": 0.7 * torch.randn(5, 3, generator=g, dtype=torch.float64),
            "b1": 0.1 * torch.randn(5, generator=g, dtype=torch.float64),
            "w2": 0.7 * torch.randn(2, 5, generator=g, dtype=torch.float64)}

    def loss(params):
        h = torch.tanh(torch.einsum("bi,rhi->rbh", x, params["w1"]) + params["b1"].unsqueeze(1))
        out = torch.einsum("rbh,roh->rbo", h, params["w2"])
        return ((out - y) ** 2).mean(dim=(1, 2))

    return init, loss
