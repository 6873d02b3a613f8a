"""Atlas-style browsing: facet counts under the current filters and the per-sol timeline."""

from __future__ import annotations

import json
from typing import Literal

import anyio
from fastapi import APIRouter, Response

from ...archive.facets import facets, timeline
from ..deps import FiltersDep, StateDep
from ..schemas import Facets, Timeline

router = APIRouter(prefix="/api", tags=["browse"])


async def _cached(state, key, compute) -> Response:
    """``compute()``'s JSON, cached for a few seconds by the filters (as search totals are: a page asks for
    the facets and the timeline of the same filters again as it pages), run as a search runs."""

    def run() -> bytes:
        def fresh() -> bytes:
            with state.sessions() as s:
                return json.dumps(compute(s), separators=(",", ":")).encode()

        return state.browse.get(key, fresh)

    body = await anyio.to_thread.run_sync(run, limiter=state.searches)
    return Response(body, media_type="application/json")


@router.get("/facets", response_class=Response, responses={200: {"model": Facets}})
async def get_facets(state: StateDep, f: FiltersDep):
    """How many images each value of each facet (class, instrument, unknown, reviewed, off-camera,
    confident) would give: each counted under every filter but its own; ``total`` under all of them."""
    return await _cached(state, ("facets", f.key()), lambda s: facets(s, f))


@router.get("/timeline", response_class=Response, responses={200: {"model": Timeline}})
async def get_timeline(state: StateDep, f: FiltersDep, by: Literal["class", "camera"] = "class"):
    """Images per sol by class or camera, under the filters but the sol range (``selected`` says it)."""
    return await _cached(state, ("timeline", by, f.key()), lambda s: timeline(s, f, by))
