"""Temperature scaling (Guo et al. 2017): probabilities = softmax(logits / T), with T
fitted by minimising the negative log-likelihood on held-out data."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax

from calibrators.metrics import Floats, Ints, softmax

# T is searched on a log scale within these bounds; real networks land near 1-3.
LOG_T_BOUNDS = (np.log(0.05), np.log(20.0))


def fit_temperature(logits: npt.ArrayLike, labels: Ints) -> float:
    """The temperature that minimises NLL of labels under softmax(logits / T)."""
    z = np.asarray(logits, dtype=np.float64)
    rows = np.arange(labels.shape[0])

    def loss(log_t: float) -> float:
        return float(-log_softmax(z / np.exp(log_t), axis=1)[rows, labels].mean())

    result = minimize_scalar(loss, bounds=LOG_T_BOUNDS, method="bounded", options={"xatol": 1e-6})
    return float(np.exp(result.x))


def apply_temperature(logits: npt.ArrayLike, temperature: float) -> Floats:
    """The numpy reference the exported graph is tested against."""
    return softmax(np.asarray(logits, dtype=np.float64) / temperature)
