"""The pipeline skeleton: one table-miss flow per declared table (cookie ``base``)."""
from __future__ import annotations

from controller.flows import COOKIE_BASE, flow
from controller.pipeline.base import Feature, Part, SwitchContext
from controller.pipeline.tables import PRIO_MISS, TABLES

__all__ = ["FEATURE"]


def _contribute(sw: SwitchContext) -> Part:
    return Part(flows=[flow(t.id, PRIO_MISS, {}, () if t.miss is None else [("goto", t.miss)],
                            COOKIE_BASE) for t in TABLES])


FEATURE = Feature("skeleton", _contribute)
