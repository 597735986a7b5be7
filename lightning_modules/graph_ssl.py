"""Graph semi-supervised learning in torch, on any device: kNN graphs, label propagation and label spreading.

The same mathematics as scikit-learn's :class:`~sklearn.semi_supervised.LabelPropagation` and
:class:`~sklearn.semi_supervised.LabelSpreading` (``knn`` and ``rbf`` kernels, ``tol=1e-3`` on the
summed change of the label distributions, inductive prediction from the training points), built
for catalogue sizes:

- the ``knn`` graph comes from exact, blocked matrix products and a top-k per block: each block
  pair ``(I, J)`` is multiplied once and gives candidates to the rows of ``I`` and of ``J``, so
  the graph costs ``n^2 d`` multiply-adds and ``block^2`` floats of memory;
- the iterations multiply a sparse CSR matrix (``n x k`` entries) with the ``n x classes``
  distributions;
- new points get the label distributions of their ``k`` nearest training points, searched in
  blocks the same way.

The ``rbf`` kernel builds the dense ``n x n`` kernel, so it is refused above :data:`RBF_MAX_POINTS`.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Iterator

import torch

log = logging.getLogger(__name__)

#: scikit-learn's convergence tolerance on ``|Y_t - Y_{t-1}|.sum()``.
TOL = 1e-3
#: Largest training set for the dense ``rbf`` kernel (its ``n x n`` matrix in float64: 3.2 GB).
RBF_MAX_POINTS = 20_000
_GROUP = 32  # columns per group in the top-k selection below


def default_block(device: torch.device) -> int:
    """Rows per block of the distance products: 2,048 on a CPU (16 MB per block), 8,192 on a GPU."""
    return 8192 if device.type == "cuda" else 2048


def _smallest(distances: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` smallest values of every row and their columns (unsorted).

    Wide rows are cut in groups of :data:`_GROUP` columns: the ``k`` smallest values lie in the
    ``k`` groups with the smallest minima, so only those ``k * 32`` columns go through ``topk``
    (exact, and about twice as fast as ``topk`` over the whole row on a CPU).
    """
    rows, width = distances.shape
    k = min(k, width)
    if width < 4 * k * _GROUP or width % _GROUP:
        return torch.topk(distances, k, dim=1, largest=False, sorted=False)
    minima = distances.view(rows, width // _GROUP, _GROUP).amin(2)
    groups = torch.topk(minima, k, dim=1, largest=False, sorted=False).indices
    columns = (groups[:, :, None] * _GROUP + torch.arange(_GROUP, device=distances.device)).reshape(rows, -1)
    values, picked = torch.topk(distances.gather(1, columns), k, dim=1, largest=False, sorted=False)
    return values, columns.gather(1, picked)


def _merge(
    best: tuple[torch.Tensor, torch.Tensor], rows: slice, found: tuple[torch.Tensor, torch.Tensor], offset: int
) -> None:
    """Keep the ``k`` smallest of ``best[rows]`` and ``found`` (columns shifted by ``offset``)."""
    values = torch.cat([best[0][rows], found[0]], dim=1)
    indices = torch.cat([best[1][rows], found[1] + offset], dim=1)
    kept = torch.topk(values, best[0].shape[1], dim=1, largest=False, sorted=False).indices
    best[0][rows] = values.gather(1, kept)
    best[1][rows] = indices.gather(1, kept)


def _sorted(best: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    order = best[0].argsort(dim=1, stable=True)
    return best[1].gather(1, order)


def _blocks(n: int, block: int) -> Iterator[slice]:
    return (slice(start, min(start + block, n)) for start in range(0, n, block))


@torch.no_grad()
def knn_graph(features: torch.Tensor, k: int, block: int | None = None) -> torch.Tensor:
    """Indices ``[n, k]`` of the ``k`` nearest points of every point (itself included), nearest first.

    Exact squared Euclidean distances from float32 products; each pair of row blocks is
    multiplied once (the lower triangle is the transpose of the upper one).
    """
    x = features.float()
    n = len(x)
    if not 0 < k <= n:
        raise ValueError(f"n_neighbors={k} needs between 1 and {n} points (found {n}).")
    block = block or default_block(x.device)
    norms = (x * x).sum(1)
    best = (torch.full((n, k), math.inf, device=x.device), torch.zeros((n, k), dtype=torch.long, device=x.device))
    for rows in _blocks(n, block):
        for columns in _blocks(n, block):
            if columns.start < rows.start:
                continue
            distances = torch.addmm(norms[columns][None, :], x[rows], x[columns].T, alpha=-2.0)
            distances += norms[rows][:, None]
            _merge(best, rows, _smallest(distances, k), columns.start)
            if columns.start != rows.start:
                _merge(best, columns, _smallest(distances.T.contiguous(), k), rows.start)
    return _sorted(best)


@torch.no_grad()
def knn_search(queries: torch.Tensor, base: torch.Tensor, k: int, block: int | None = None) -> torch.Tensor:
    """Indices ``[m, k]`` of the ``k`` nearest ``base`` points of every query, nearest first."""
    q, x = queries.float(), base.float()
    k = min(k, len(x))
    block = block or default_block(x.device)
    norms = (x * x).sum(1)
    best = (
        torch.full((len(q), k), math.inf, device=x.device),
        torch.zeros((len(q), k), dtype=torch.long, device=x.device),
    )
    for rows in _blocks(len(q), block):
        for columns in _blocks(len(x), block):
            distances = torch.addmm(norms[columns][None, :], q[rows], x[columns].T, alpha=-2.0)
            _merge(best, rows, _smallest(distances, k), columns.start)
    return _sorted(best)


def _sparse(neighbors: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    n, k = neighbors.shape
    crow = torch.arange(0, n * k + 1, k, device=neighbors.device)
    with warnings.catch_warnings():  # "sparse CSR support is in beta": matrix products with it are stable
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, neighbors.reshape(-1), weights.reshape(-1), size=(n, n))


def knn_operator(neighbors: torch.Tensor, variant: str) -> torch.Tensor:
    """The iteration matrix of scikit-learn's knn graph (rows: each point's neighbours, itself included).

    ``propagation``: the connectivity matrix divided by its row sums (``k``). ``spreading``: the
    negated normalised Laplacian ``D^-1/2 A D^-1/2`` without its diagonal, ``D`` counting how
    often a point is another point's neighbour (scipy's in-degree without self-loops).
    """
    n, k = neighbors.shape
    if variant == "propagation":
        return _sparse(neighbors, torch.full((n, k), 1.0 / k, dtype=torch.float64, device=neighbors.device))
    itself = neighbors == torch.arange(n, device=neighbors.device)[:, None]
    degree = torch.zeros(n, dtype=torch.float64, device=neighbors.device)
    degree.index_add_(
        0, neighbors[~itself], torch.ones(int((~itself).sum()), dtype=torch.float64, device=neighbors.device)
    )
    scale = torch.where(degree > 0, degree.sqrt(), torch.ones_like(degree))
    weights = (1.0 / scale)[:, None] / scale[neighbors]
    return _sparse(neighbors, weights.masked_fill(itself, 0.0))


def rbf_kernel(a: torch.Tensor, b: torch.Tensor, gamma: float) -> torch.Tensor:
    """``exp(-gamma * |a_i - b_j|^2)`` in float64."""
    a, b = a.double(), b.double()
    squared = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return torch.exp(-gamma * squared.clamp_min_(0.0))


def rbf_operator(features: torch.Tensor, gamma: float, variant: str) -> torch.Tensor:
    """The dense iteration matrix of scikit-learn's rbf graph (refused above :data:`RBF_MAX_POINTS`)."""
    if len(features) > RBF_MAX_POINTS:
        raise ValueError(
            f"kernel=rbf builds a dense {len(features)} x {len(features)} matrix: use kernel=knn above "
            f"{RBF_MAX_POINTS} training points."
        )
    kernel = rbf_kernel(features, features, gamma)
    if variant == "propagation":
        return kernel / kernel.sum(1, keepdim=True)
    degree = kernel.sum(0) - kernel.diagonal()
    scale = torch.where(degree > 0, degree.sqrt(), torch.ones_like(degree))
    laplacian = kernel / scale[:, None] / scale[None, :]
    return laplacian.fill_diagonal_(0.0)


def _normalized(distributions: torch.Tensor) -> torch.Tensor:
    total = distributions.sum(1, keepdim=True)
    return distributions / torch.where(total == 0, torch.ones_like(total), total)


@torch.no_grad()
def iterate(
    operator: torch.Tensor,
    targets: torch.Tensor,
    num_classes: int,
    variant: str,
    alpha: float,
    max_iter: int,
) -> tuple[torch.Tensor, int, bool]:
    """Run scikit-learn's propagation / spreading iterations; return distributions, iterations, converged.

    Args:
        operator: Sparse or dense ``[n, n]`` matrix from :func:`knn_operator` or :func:`rbf_operator`.
        targets: Class index of every point, ``-1`` when unlabeled.
        num_classes: Number of columns of the distributions.
        variant: ``propagation`` (labeled rows clamped) or ``spreading`` (``alpha`` mixing).
        alpha: Clamping factor of spreading.
        max_iter: Iteration limit.

    """
    n = len(targets)
    labeled = targets >= 0
    distributions = torch.zeros((n, num_classes), dtype=torch.float64, device=targets.device)
    distributions[labeled, targets[labeled]] = 1.0
    static = distributions * (1.0 - alpha) if variant == "spreading" else distributions.clone()
    previous = torch.zeros_like(distributions)
    converged, iterations = False, 0
    for iterations in range(max_iter):  # noqa: B007 -- the count is returned
        if float((distributions - previous).abs().sum()) < TOL:
            converged = True
            break
        previous = distributions
        spread = operator @ distributions
        if variant == "propagation":
            distributions = torch.where(labeled[:, None], static, _normalized(spread))
        else:
            distributions = alpha * spread + static
    else:
        iterations = max_iter
    return _normalized(distributions), iterations, converged


@torch.no_grad()
def predict_proba(
    base: torch.Tensor,
    distributions: torch.Tensor,
    queries: torch.Tensor,
    kernel: str,
    n_neighbors: int,
    gamma: float,
    block: int | None = None,
) -> torch.Tensor:
    """Class probabilities ``[m, classes]`` of new points from the training points' label distributions.

    ``knn``: the sum of the distributions of the ``n_neighbors`` nearest training points;
    ``rbf``: the kernel-weighted sum over all training points; rows normalised to one (a row
    without any mass stays zero).
    """
    if kernel == "knn":
        neighbors = knn_search(queries, base, n_neighbors, block)
        scores = distributions.double()[neighbors].sum(1)
    else:
        block = block or default_block(base.device)
        scores = torch.cat(
            [rbf_kernel(queries[rows], base, gamma) @ distributions.double() for rows in _blocks(len(queries), block)]
        )
    return _normalized(scores)
