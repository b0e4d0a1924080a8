"""Training losses of the attractor network (Eq. 4 and 5 of the attractor paper)."""

from basin.losses.attractor import LossTerms, LossWeights, attractor_loss
from basin.losses.forward import StackForward, run_stack
from basin.losses.jacobian import (
    JACOBIAN_METHODS,
    eigen_loss,
    frobenius_sq_from_record,
    jacobian_frobenius_sq,
)

__all__ = [
    "JACOBIAN_METHODS",
    "LossTerms",
    "LossWeights",
    "StackForward",
    "attractor_loss",
    "eigen_loss",
    "frobenius_sq_from_record",
    "jacobian_frobenius_sq",
    "run_stack",
]
