"""The review queue: the images whose labels would teach the model most."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query

from ...curate.queue import review_queue
from ...curate.strategies import DEFAULT_STRATEGY, STRATEGIES
from ..deps import ModelDep, SessionDep
from ..schemas import ReviewQueue

router = APIRouter(tags=["curation"])


@router.get("/api/review", response_model=ReviewQueue)
def review(
    session: SessionDep,
    active: ModelDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
    strategy: str = DEFAULT_STRATEGY,
):
    """The not yet reviewed images whose labels would teach the model most, in asking order."""
    if strategy not in STRATEGIES:
        raise HTTPException(422, f"strategy must be one of {', '.join(STRATEGIES)}")
    items = review_queue(session, active.classifier, strategy, limit)
    return {"strategy": strategy, "default": DEFAULT_STRATEGY, "strategies": list(STRATEGIES), "items": items}
