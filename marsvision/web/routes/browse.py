"""Atlas-style browsing: facet counts under the current filters and the per-sol timeline."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Literal

import anyio
from fastapi import APIRouter, Response
from sqlalchemy.orm import Session

from ...archive.facets import facets, timeline
from ..deps import FiltersDep, StateDep
from ..schemas import Facets, Timeline
from ..state import ArchiveState

router = APIRouter(prefix="/api", tags=["browse"])


async def _cached(state: ArchiveState, key, compute: Callable[[Session], dict]) -> dict:
    """``compute()``, cached for a few seconds by the filters (as search totals are: a page asks for the
    facets and the timeline of the same filters again as it pages), run as a search runs."""

    def run() -> dict:
        def fresh() -> dict:
            with state.sessions() as s:
                return compute(s)

        return state.browse.get(key, fresh)

    return await anyio.to_thread.run_sync(run, limiter=state.searches)


def _json(body: dict) -> Response:
    # Raw JSON as /api/images sends it (the models only document it): a timeline is ~26 000 numbers.
    return Response(json.dumps(body, separators=(",", ":")), media_type="application/json")


@router.get("/facets", response_class=Response, responses={200: {"model": Facets}})
async def get_facets(state: StateDep, f: FiltersDep):
    """How many images each value of each facet (class, instrument, unknown, reviewed, off-camera,
    confident) would give: each counted under every filter but its own; ``total`` under all of them."""
    return _json(await _cached(state, ("facets", f.key()), lambda s: facets(s, f)))


@router.get("/timeline", response_class=Response, responses={200: {"model": Timeline}})
async def get_timeline(state: StateDep, f: FiltersDep, by: Literal["class", "camera"] = "class"):
    """Images per sol by class or camera, under the filters but the sol range (``selected`` says it)."""
    # Cached without the sol range, which it does not depend on: a click on a bar (a new sol range) finds
    # the timeline it was clicked on in the cache.
    whole = f.without("sol_min", "sol_max")
    body = await _cached(state, ("timeline", by, whole.key()), lambda s: timeline(s, whole, by))
    return _json({**body, "selected": [f.sol_min, f.sol_max]})
