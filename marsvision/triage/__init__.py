"""Downlink triage: which of a sol's images to send home first, within a budget, and why.

``plan`` (the selection over precomputed predictions, shared by the command and benchmarks/triage.py),
``state`` (what Earth already has: the state folder), ``priorities`` (a science team's class weights),
``command`` (``TriageConfig``, ``run_triage``: `marsvision triage`). numpy and the inference API only:
no torch, no archive.
"""

from .plan import Budget, Plan, PlanParams, PlanRow, plan_downlink
from .state import Earth, load_state, save_state

__all__ = ["Budget", "Earth", "Plan", "PlanParams", "PlanRow", "load_state", "plan_downlink", "save_state"]
