"""Every optimizer thalweg ships, registered in the order `thalweg optimizers` lists them:
torch.optim's twins, the second-order methods, the matrix rules, the contenders.

Each room keeps its entries (schema, option grid, reference, search space) next to its rules
(`rules.twins`, `second_order.catalog`, `matrix.catalog`, `rules.catalog`); this module, which
`import thalweg.optim` runs, hands them to the one table, :mod:`thalweg.optim.registry`.
"""

from __future__ import annotations

from thalweg.optim import registry
from thalweg.optim.matrix.catalog import INFOS as MATRIX
from thalweg.optim.rules.catalog import INFOS as CONTENDERS
from thalweg.optim.rules.twins import TWINS
from thalweg.optim.second_order.catalog import INFOS as SECOND_ORDER

__all__ = ["INFOS"]

INFOS = tuple(registry.register(i) for i in (*TWINS, *SECOND_ORDER, *MATRIX, *CONTENDERS))
