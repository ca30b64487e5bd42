"""Adam for the perturbation's few parameter tensors.

The first ``torch.optim`` optimiser made in a process imports ``torch._dynamo`` (1.2-1.4 s on 2 CPU
cores: more than a second of every `vdf protect` run and of every worker). The update here is the
one ``torch.optim.Adam`` computes with its defaults (no weight decay, no AMSGrad, one tensor at a
time), so the engine's results do not depend on which of the two ran.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch


class Adam:
    """Kingma and Ba's Adam, step for step as ``torch.optim.Adam(parameters, lr)`` on one tensor at a time."""

    def __init__(self, parameters: Iterable[torch.Tensor], lr: float,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.parameters = list(parameters)
        self.lr, self.betas, self.eps = lr, betas, eps
        self.steps = [0] * len(self.parameters)  # per tensor: one without a gradient is not stepped
        self.first_moments = [torch.zeros_like(p) for p in self.parameters]
        self.second_moments = [torch.zeros_like(p) for p in self.parameters]

    def zero_grad(self) -> None:
        for parameter in self.parameters:
            parameter.grad = None

    @torch.no_grad()
    def step(self) -> None:
        beta1, beta2 = self.betas
        for i, (parameter, first, second) in enumerate(zip(self.parameters, self.first_moments, self.second_moments)):
            if parameter.grad is None:
                continue
            self.steps[i] += 1
            step_size = self.lr / (1 - beta1 ** self.steps[i])
            second_correction = math.sqrt(1 - beta2 ** self.steps[i])
            first.lerp_(parameter.grad, 1 - beta1)
            second.mul_(beta2).addcmul_(parameter.grad, parameter.grad, value=1 - beta2)
            parameter.addcdiv_(first, (second.sqrt() / second_correction).add_(self.eps), value=-step_size)
