"""Atlas-style browsing: facet counts under the current filters and the per-sol timeline.

A facet is counted as faceted search counts it: under every filter but its own, so the counts beside
"Class" say how many images each class would give with the other filters kept. All the facets come from
one GROUP BY over the archive (a "cube" of label × instrument × unknown × curator's label × off-camera,
with the count of each group and of its rows with confidence ≥ 0.9: a few hundred groups), read under
the filters that are not facets (sol range, confidence, text, …); each facet then sums the groups that
pass the other facets' filters. One scan instead of one per facet.

The cube's columns are, in that order, those of the index ``ix_images_cube`` (migration 0005), so the
scan reads the index alone and groups without sorting (SQLite: 40 ms at 100 000 rows, against 210 ms
grouping by a computed flag). The timeline has two such indexes, by class and by camera, then sol. On
SQLite, which has no statistics until ANALYZE, the query names the index when every filter set is one
the index covers: left to itself, SQLite took the sol index for a sol range and sorted the rows it found
(240 ms, against 20 ms from the covering index; benchmarks/browse.py).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from ..errors import UsageError
from . import counts
from .db import Image
from .filters import CONFIDENT, Filters

FACETS = ("label", "instrument", "unknown", "reviewed", "off_camera", "confident")
TIMELINE_BY = {"class": Image.label, "camera": Image.instrument}

_CUBE = (Image.label, Image.instrument, Image.unknown, Image.reviewed_label, Image.off_camera)
# The filters the covering indexes hold the columns of (their other columns: confidence, sol).
_COVERED = {*FACETS, "reviewed_label", "min_confidence", "max_confidence", "sol_min", "sol_max"}


def _run(session: Session, q: Select, filters: Filters, index: str) -> list:
    """The rows of ``q``, read from ``index`` on SQLite when it covers every filter that is set (module
    docstring). SQLAlchemy's SQLite dialect renders no table hints, so the statement is compiled here and
    ``INDEXED BY`` written after its one table (the SQL is ours: its values stay bound parameters)."""
    conn = session.connection()
    if conn.dialect.name != "sqlite" or any(v is not None and k not in _COVERED for k, v in vars(filters).items()):
        return conn.execute(q).all()
    compiled = q.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})  # IN (…) expanded
    sql = compiled.string.replace("FROM images", f"FROM images INDEXED BY {index}", 1)
    params = tuple(compiled.params[name] for name in compiled.positiontup)
    # sqlite3's own tuples: wrapping 19 000 timeline groups (100 000 rows) in SQLAlchemy rows took 20 ms
    return conn.connection.driver_connection.execute(sql, params).fetchall()


class _Group:
    """Images of one cube group, split by confidence ≥ 0.9."""

    __slots__ = ("label", "instrument", "unknown", "reviewed", "off_camera", "confident90", "n")

    def __init__(self, row, confident90: bool, n: int):
        # flags as bools: rows read by ``_run``'s own SQL on SQLite come back as the driver's 0 and 1
        flag = lambda v: None if v is None else bool(v)  # noqa: E731
        self.label, self.instrument, self.unknown, self.off_camera = row[0], row[1], flag(row[2]), flag(row[4])
        self.reviewed, self.confident90, self.n = row[3] is not None, confident90, n


def _value(row, facet: str):
    """The row's value of ``facet`` (the confident facet is derived: ≥ 0.9, not unknown, not off-camera)."""
    if facet == "confident":
        return bool(row.confident90) and row.unknown is False and row.off_camera is not True
    return getattr(row, facet)


def _passes(filters: Filters) -> dict[str, Callable]:
    """For each facet filter that is set: does a cube group pass it (as ``Filters.conditions`` says in SQL)."""
    tests = {}
    for facet in FACETS:
        wanted = getattr(filters, facet)
        if wanted is None:
            continue
        if facet == "instrument":
            codes = {wanted, wanted.upper()}
            tests[facet] = lambda row, codes=codes: row.instrument in codes
        else:
            tests[facet] = lambda row, f=facet, w=wanted: _value(row, f) is not None and _value(row, f) == w
    return tests


def facets(session: Session, filters: Filters) -> dict:
    """{total, facets: {name: [{value, count}], most first}}: ``total`` under every filter; each facet
    under every filter but its own. Values are as the columns hold them (None: not known)."""
    rest = filters.without(*FACETS)
    rows = counts.cube(session, rest)
    if rows is None:  # a filter the counts cannot say: the images themselves
        q = rest.apply(select(*_CUBE, func.count(), func.count().filter(Image.confidence >= CONFIDENT)))
        rows = _run(session, q.group_by(*_CUBE), rest, "ix_images_cube")
    cube = []
    for row in rows:
        n, n90 = row[5], row[6]
        cube += [_Group(row, True, n90), _Group(row, False, n - n90)]
    tests = _passes(filters)
    per_facet: dict[str, Counter] = {f: Counter() for f in FACETS}
    total = 0
    for row in cube:
        if not row.n:
            continue
        failed = [f for f, test in tests.items() if not test(row)]
        if not failed:
            total += row.n
        if len(failed) > 1:  # counts in no facet: every facet keeps at least one filter it fails
            continue
        for facet in failed if failed else FACETS:
            per_facet[facet][_value(row, facet)] += row.n
    return {
        "total": total,
        "facets": {
            f: [{"value": v, "count": n} for v, n in sorted(c.items(), key=lambda vn: (-vn[1], str(vn[0])))]
            for f, c in per_facet.items()
        },
    }


def timeline(session: Session, filters: Filters, by: str = "class") -> dict:
    """Images per sol, split by class or camera, under the filters but the sol range (the timeline shows
    the whole mission and the range it selects: ``selected``). ``series`` are ordered most images first;
    each one's ``counts`` line up with ``sols``. Rows without a sol are left out."""
    if by not in TIMELINE_BY:
        raise UsageError(f"by must be one of {', '.join(TIMELINE_BY)}, not {by!r}")
    key = TIMELINE_BY[by]
    whole = filters.without("sol_min", "sol_max")
    rows = counts.per_sol(session, whole, key.key)
    if rows is None:
        # key, then sol: the order of the (label, sol, id) and (instrument, sol, id) indexes, so the grouping
        # reads an index in order without sorting.
        q = whole.apply(select(key, Image.sol, func.count())).where(Image.sol.is_not(None))
        index = f"ix_images_{'label' if by == 'class' else 'instrument'}_timeline"
        rows = _run(session, q.group_by(key, Image.sol), filters, index)
    sols = sorted({sol for _, sol, _ in rows})
    column = {sol: i for i, sol in enumerate(sols)}
    per_key: dict = defaultdict(lambda: [0] * len(sols))
    for k, sol, n in rows:
        per_key[k][column[sol]] = n
    series = [{"key": k, "total": sum(c), "counts": c} for k, c in per_key.items()]
    series.sort(key=lambda s: (-s["total"], str(s["key"])))
    return {"by": by, "sols": sols, "series": series, "selected": [filters.sol_min, filters.sol_max]}
