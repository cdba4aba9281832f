"""``--compile``: a model called through ``torch.compile`` (TorchDynamo traces it, Inductor
generates its kernels), with an eager fallback.

``torch.compile(model)`` only wraps the model: Dynamo and Inductor compile the forward at its
first call, and a training step's backward at its first backward. A failure (an operation
Inductor cannot lower, no C++ compiler, an unsupported platform) therefore surfaces at the first
step, not at the wrap. ``Compiled.step`` runs a step, forward or forward and backward, through the
compiled model; where that raises, it prints one line naming the model and the error and runs the
step, and every later one, eagerly.

Many models in one process (the study's costs, ``benchmarks/module_overhead.py --compile``): Dynamo
caches graphs per Python code object, and every model built from the same classes shares their
``forward`` code, whose cache holds ``torch._dynamo.config.recompile_limit`` graphs (8 in torch
2.13); past that, Dynamo runs the frame eagerly with only a logged warning, so the ninth model
would be timed eager as if compiled. Each ``Compiled`` model therefore raises that limit by
``RECOMPILES_PER_MODEL``.

Only calls go through the compiled wrapper: weights, checkpoints, hooks and explanations stay
with the plain module, whose ``state_dict`` keys carry no ``_orig_mod.`` prefix.
"""

from __future__ import annotations

import sys
from typing import Callable, TypeVar

import torch
from torch import nn

from .label_sequence import takes_targets

T = TypeVar("T")
RECOMPILES_PER_MODEL = 8  # graphs one model may need: input shapes × train/eval, with room to spare


class Compiled(nn.Module):
    """``model`` called through ``torch.compile``, and eagerly from the first failure on.

    ``name`` identifies the model in the fallback message (e.g. "resnet20 + cbam"). Graphs are
    compiled for static shapes (``dynamic=False``): each input shape gets its own graph, as for a
    model served at a fixed batch size, instead of a slower shape-generic one from the second
    shape on."""

    def __init__(self, model: nn.Module, name: str) -> None:
        super().__init__()
        self.model = model
        self.name = name
        self.compiled: nn.Module | None = None
        torch._dynamo.config.recompile_limit += RECOMPILES_PER_MODEL  # module docstring: many models
        try:
            self.compiled = torch.compile(model, dynamic=False)
        except Exception as e:  # torch.compile refuses some platforms and Python versions at once
            self.fall_back(e)

    @property
    def active(self) -> bool:
        """Whether calls still go through the compiled model (no failure so far)."""
        return self.compiled is not None

    @property
    def takes_targets(self) -> bool:
        """That of the wrapped model (``label_sequence.takes_targets``)."""
        return takes_targets(self.model)

    def forward(self, *args, **kwargs):
        return self.step(lambda model: model(*args, **kwargs))

    def step(self, fn: Callable[[nn.Module], T]) -> T:
        """``fn(compiled model)``, or ``fn(model)`` where that raises (now and from then on).

        ``fn`` is a whole step, backward included where it trains, since the backward compiles at
        its first call too; it must not depend on what a failed call left (zero the gradients
        before the backward). A fault of the model itself raises again from the eager call."""
        if self.compiled is not None:
            try:
                return fn(self.compiled)
            except Exception as e:  # any compiler failure: which exception types appear varies by backend
                self.fall_back(e)
        return fn(self.model)

    def fall_back(self, error: Exception) -> None:
        """Run eagerly from now on, and say why on stderr, in one line."""
        self.compiled = None
        first_line = next((line for line in str(error).splitlines() if line.strip()), "")
        print(f"torch.compile failed for {self.name}, running it eagerly: {type(error).__name__}: {first_line}",
              file=sys.stderr, flush=True)
