"""The archive's image counts by the dimensions the page filters on, kept in step with ``images`` by the
database itself, and read instead of the images when a filter can be said in those dimensions.

``image_counts`` holds one row per combination of sol × model label × camera × unknown × curator's label ×
off-camera × unreadable × confidence percent, with how many images have it. Triggers on ``images``
(migration 0007) add and take away in the transaction that inserts, updates or deletes the images, so a
kill can never leave the counts out of step with the rows. The facet counts, the timeline, the class counts
and the search totals then sum a few hundred thousand count rows instead of a million images
(benchmarks/results/browse-1000000.md); a filter these dimensions cannot say (free text, a product field,
a confidence that is not a whole percent, …) is counted on ``images`` as before.

Every dimension is stored NOT NULL (a unique key must match NULLs for an upsert to find its row): a missing
string as '' (no writer stores an empty label or camera: records.py writes None), a missing flag as -1, a
missing sol or confidence as a value no image has. ``confidence_pct`` is the largest whole k with
``confidence >= k / 100`` as doubles, so ``min_confidence = k / 100`` and ``confidence >= k / 100`` select
the same images exactly; both databases compute k / 100 as the same correctly rounded double Python does.
"""

from __future__ import annotations

from sqlalchemy import Select, case, func, select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from .db import ImageCount, ImageTotal
from .filters import CONFIDENT, Filters

NO_SOL = -(2**31)
NO_CONFIDENCE = -1000
NO_TEXT = ""
NO_FLAG = -1
# The filters the counts can answer; the others (q, product fields, start times, …) count the images.
COUNTED = {
    "label",
    "min_confidence",
    "max_confidence",
    "unknown",
    "sol_min",
    "sol_max",
    "instrument",
    "reviewed",
    "reviewed_label",
    "error",
    "off_camera",
    "confident",
}
# The per-sol counts (the timeline, and filters with a sol range) and the same without the sol (the rest: a
# few thousand rows against a few hundred thousand). Sol first: a sol range is a range of the key, and the
# class timeline reads the key in order without sorting.
DIMENSIONS = ("sol", "label", "instrument", "unknown", "reviewed_label", "off_camera", "error", "confidence_pct")
TABLES = {"image_counts": DIMENSIONS, "image_totals": DIMENSIONS[1:]}
_TRIGGER_COLUMNS = ("label", "sol", "instrument", "unknown", "reviewed_label", "off_camera", "error", "confidence")


def _flag(c: str) -> str:
    return f"CASE WHEN {c} IS NULL THEN {NO_FLAG} WHEN {c} THEN 1 ELSE 0 END"


def encoded(row: str) -> dict[str, str]:
    """SQL for each of ``DIMENSIONS`` of the image row named ``row`` (NEW, OLD, a table): the same text on
    SQLite and PostgreSQL. CAST rounds on PostgreSQL and truncates on SQLite; either guess is within one of
    the percent, which the comparisons then correct."""
    c = f"{row}.confidence"
    guess = f"CAST({c} * 100 AS INTEGER)"
    pct = (
        f"CASE WHEN {c} IS NULL THEN {NO_CONFIDENCE} WHEN {c} >= ({guess} + 1) / 100.0 THEN {guess} + 1 "
        f"WHEN {c} < {guess} / 100.0 THEN {guess} - 1 ELSE {guess} END"
    )
    return {
        "sol": f"COALESCE({row}.sol, {NO_SOL})",
        "label": f"COALESCE({row}.label, '')",
        "instrument": f"COALESCE({row}.instrument, '')",
        "unknown": _flag(f"{row}.unknown"),
        "reviewed_label": f"COALESCE({row}.reviewed_label, '')",
        "off_camera": _flag(f"{row}.off_camera"),
        "error": f"CASE WHEN {row}.error IS NULL THEN 0 ELSE 1 END",
        "confidence_pct": pct,
    }


def _upsert(table: str, select_sql: str) -> str:
    """Add the (dimensions…, n) rows of ``select_sql`` to the counts in ``table``."""
    dims = ", ".join(TABLES[table])
    # WHERE true: SQLite reads an ON CONFLICT straight after a SELECT's FROM as a join constraint otherwise
    return (
        f"INSERT INTO {table} ({dims}, n) SELECT * FROM ({select_sql}) AS d WHERE true "
        f"ON CONFLICT ({dims}) DO UPDATE SET n = {table}.n + excluded.n"
    )


def _positions(dims) -> str:
    return ", ".join(str(i) for i in range(1, len(dims) + 1))


def _grouped(table: str, source: str, sign: str = "") -> str:
    """(dimensions…, n) of the images in ``source``, grouped as ``table`` counts them."""
    enc = encoded(source)
    dims = ", ".join(f"{enc[d]} AS {d}" for d in TABLES[table])
    # by position: PostgreSQL reads a GROUP BY name as the table's column (the raw confidence), not the alias
    return f"SELECT {dims}, {sign}count(*) AS n FROM {source} GROUP BY {_positions(TABLES[table])}"


def _sqlite_triggers() -> list[str]:
    """Row triggers (SQLite has no others): an upsert per inserted row and table, two per changed row.

    Their cost on a bulk load (benchmarks/results/count_triggers-images.md, 100 000 image rows without
    vectors, chunks of 5 000): 18.6-20.3 CPU s against 11.6-12.5 without triggers, ~70 µs a row. Kept on for
    bulk loads too: ~70 s of CPU is 8 % of the serve benchmark's million-row load with vectors (913 s), 2 % of
    the indexer's 3 ms an image (336 images/s, benchmarks/results/serve.md), and dropping them around a load
    would need the whole load in one transaction for a kill to leave the counts right (a rebuild of both
    tables: 5.4 s at 1M rows)."""
    add, take = [], []
    for table, dims in TABLES.items():
        new, old = encoded("NEW"), encoded("OLD")
        add.append(_upsert(table, f"SELECT {', '.join(new[d] for d in dims)}, 1"))
        take.append(f"UPDATE {table} SET n = n - 1 WHERE {' AND '.join(f'{d} = {old[d]}' for d in dims)}")
    changed = " OR ".join(f"OLD.{c} IS NOT NEW.{c}" for c in _TRIGGER_COLUMNS)
    return [
        f"CREATE TRIGGER image_counts_insert AFTER INSERT ON images BEGIN {'; '.join(add)}; END",
        f"CREATE TRIGGER image_counts_delete AFTER DELETE ON images BEGIN {'; '.join(take)}; END",
        f"CREATE TRIGGER image_counts_update AFTER UPDATE OF {', '.join(_TRIGGER_COLUMNS)} ON images "
        f"WHEN {changed} BEGIN {'; '.join(take + add)}; END",
    ]


def _postgresql_triggers() -> list[str]:
    """Statement triggers over the transition tables: a chunk of 5 000 inserted rows is one grouped upsert
    per table, not 5 000. Sorted by key, so two writers take the count rows' locks in the same order.

    Their cost (benchmarks/results/count_triggers-postgresql-images.md, 100 000 image rows without vectors):
    20.6-20.7 CPU s of client and server against 12.8-13.5 without, ~75 µs a row (most rows of a chunk open
    a per-sol group of their own, so the upsert still writes one count row for most of them); the bulk load's
    wall time 49-51 s against 28-30 s on the shared cores. Kept on, as on SQLite."""
    steps = {"INSERT": [], "DELETE": [], "UPDATE": []}
    for table, dims in TABLES.items():
        order = f" ORDER BY {_positions(dims)}"
        names = ", ".join(dims)
        changes = (
            f"SELECT {names}, sum(n) FROM ({_grouped(table, 'new_rows')} UNION ALL "
            f"{_grouped(table, 'old_rows', '-')}) AS c GROUP BY {names} HAVING sum(n) <> 0{order}"
        )
        steps["INSERT"].append(_upsert(table, _grouped(table, "new_rows") + order))
        steps["DELETE"].append(_upsert(table, _grouped(table, "old_rows", "-") + order))
        steps["UPDATE"].append(_upsert(table, changes))
    body = "\n".join(
        f"  {'IF' if i == 0 else 'ELSIF'} TG_OP = '{op}' THEN {'; '.join(sql)};"
        for i, (op, sql) in enumerate(steps.items())
    )
    function = f"""
CREATE OR REPLACE FUNCTION marsvision_image_counts() RETURNS trigger AS $$
BEGIN
{body}
  END IF;
  RETURN NULL;
END $$ LANGUAGE plpgsql"""
    # Transition tables allow one event per trigger, and no column list on UPDATE: an update that changes
    # no dimension sums to nothing and writes nothing (HAVING).
    tables = {"INSERT": "NEW TABLE AS new_rows", "DELETE": "OLD TABLE AS old_rows"}
    tables["UPDATE"] = "OLD TABLE AS old_rows NEW TABLE AS new_rows"
    return [function] + [
        f"CREATE TRIGGER image_counts_{op.lower()} AFTER {op} ON images REFERENCING {t} "
        "FOR EACH STATEMENT EXECUTE FUNCTION marsvision_image_counts()"
        for op, t in tables.items()
    ]


TRIGGERS = ("image_counts_insert", "image_counts_update", "image_counts_delete")


def create_triggers(conn: Connection) -> None:
    for sql in _sqlite_triggers() if conn.dialect.name == "sqlite" else _postgresql_triggers():
        conn.exec_driver_sql(sql)


def drop_triggers(conn: Connection) -> None:
    for name in TRIGGERS:
        conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {name}" + ("" if conn.dialect.name == "sqlite" else " ON images"))


def rebuild(conn: Connection) -> None:
    """The counts from the images again (in the caller's transaction)."""
    for table, dims in TABLES.items():
        conn.exec_driver_sql(f"DELETE FROM {table}")
        conn.exec_driver_sql(f"INSERT INTO {table} ({', '.join(dims)}, n) {_grouped(table, 'images')}")


# ------------------------------------------------------------------------------------------------ reading


def _percent(v: float) -> int | None:
    """k when ``v`` is k / 100 exactly (as a double), else None."""
    k = round(v * 100)
    return k if k / 100 == v else None


def _table(filters: Filters):
    """The per-sol counts when a sol range is set, else the totals (a few thousand rows)."""
    return ImageTotal if filters.sol_min is None and filters.sol_max is None else ImageCount


def conditions(filters: Filters, t=None) -> list | None:
    """The filters as conditions on the counts table ``t`` (default: ``_table``), or None when one of them
    cannot be said there."""
    set_ = {k: v for k, v in vars(filters).items() if v is not None}
    if set(set_) - COUNTED or any(v == "" for v in set_.values()):
        return None
    t = t or _table(filters)
    flag = lambda v: 1 if v else 0  # noqa: E731
    out = []
    for name, v in set_.items():
        if name in ("min_confidence", "max_confidence"):
            k = _percent(v)
            if k is None:
                return None
            out += [t.confidence_pct != NO_CONFIDENCE]
            out += [t.confidence_pct >= k] if name == "min_confidence" else [t.confidence_pct < k]
        elif name in ("sol_min", "sol_max"):
            out += [t.sol != NO_SOL, t.sol >= v if name == "sol_min" else t.sol <= v]
        elif name == "instrument":
            out.append(t.instrument == v if v == v.upper() else t.instrument.in_([v, v.upper()]))
        elif name == "reviewed":
            out.append(t.reviewed_label != NO_TEXT if v else t.reviewed_label == NO_TEXT)
        elif name == "confident":
            yes = (t.confidence_pct >= _CONFIDENT_PCT) & (t.unknown == 0) & (t.off_camera != 1)
            out.append(yes if v else ~yes)
        elif name in ("unknown", "off_camera", "error"):
            out.append(getattr(t, name) == flag(v))
        else:  # label, reviewed_label
            out.append(getattr(t, name) == v)
    return out


_CONFIDENT_PCT = round(CONFIDENT * 100)


def _where(q: Select, where: list) -> Select:
    for c in where:
        q = q.where(c)
    return q


def total(session: Session, filters: Filters) -> int | None:
    """How many images pass ``filters``, from the counts; None when the counts cannot say it."""
    where = conditions(filters)
    if where is None:
        return None
    return int(session.scalar(_where(select(func.coalesce(func.sum(_table(filters).n), 0)), where)))


def _rows(session: Session, q: Select, index: str | None = None) -> list:
    """The rows of ``q``; on SQLite as sqlite3's own tuples (wrapping the class timeline's 26 000 groups at
    a million images in SQLAlchemy rows took a third of its 105 ms), read from ``index`` when given (SQLite
    has no statistics to choose it by, and SQLAlchemy renders no table hints: the SQL is ours)."""
    conn = session.connection()
    if conn.dialect.name != "sqlite":
        return conn.execute(q).all()
    compiled = q.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
    params = tuple(compiled.params[name] for name in compiled.positiontup)
    sql = compiled.string
    if index:
        sql = sql.replace("FROM image_counts", f"FROM image_counts INDEXED BY {index}", 1)
    return conn.connection.driver_connection.execute(sql, params).fetchall()


def _text(v: str) -> str | None:
    return None if v == NO_TEXT else v


def _bool(v: int) -> bool | None:
    return None if v == NO_FLAG else bool(v)


# On SQLite, the per-sol counts by the facets' groups (then n, then the key's sol and confidence): facets
# under a sol range read it in group order, with the range checked in the index, instead of sorting the
# range's count rows (a million images, sols 100-900: 48 ms of CPU against 234; migration 0007).
CUBE_INDEX = "ix_image_counts_cube"
CUBE_INDEX_COLUMNS = ("label", "instrument", "unknown", "reviewed_label", "off_camera", "n")


def cube(session: Session, filters: Filters) -> list[tuple] | None:
    """(label, instrument, unknown, reviewed_label, off_camera, n, n with confidence ≥ 0.9) per group under
    ``filters``, as facets.py reads them from the images; None when the counts cannot say it."""
    where = conditions(filters)
    if where is None:
        return None
    t = _table(filters)
    dims = (t.label, t.instrument, t.unknown, t.reviewed_label, t.off_camera)
    confident = func.sum(case((t.confidence_pct >= _CONFIDENT_PCT, t.n), else_=0))
    q = _where(select(*dims, func.sum(t.n), confident), where).group_by(*dims).having(func.sum(t.n) > 0)
    return [
        (_text(a), _text(b), _bool(c), _text(d), _bool(e), int(n), int(n90))
        for a, b, c, d, e, n, n90 in _rows(session, q, CUBE_INDEX if t is ImageCount else None)
    ]


# On SQLite, the per-sol counts by camera, then sol (migration 0008): the camera timeline groups in index
# order. Before it, each camera's count was summed in one pass by sol (grouping by (sol, camera) sorted
# 300 000 count rows at a million images): p50 180 ms in-process, 63 ms along the index (browse-1000000.md).
CAMERA_INDEX = "ix_image_counts_camera"
CAMERA_INDEX_COLUMNS = ("instrument", "sol", "n")


def per_sol(session: Session, filters: Filters, by: str) -> list[tuple] | None:
    """(label or camera, sol, n) for the images with a sol under ``filters``; None when the counts cannot
    say it. By class, the grouping follows the key (sol, label, …): no sort. By camera on SQLite, it follows
    ``CAMERA_INDEX``. PostgreSQL hashes the groups."""
    t = ImageCount
    where = conditions(filters, t)
    if where is None:
        return None
    where.append(t.sol != NO_SOL)
    key = getattr(t, by)
    q = _where(select(key, t.sol, func.sum(t.n)), where)
    if by == "instrument":
        rows = _rows(session, q.group_by(key, t.sol).having(func.sum(t.n) > 0), CAMERA_INDEX)
    else:
        rows = _rows(session, q.group_by(t.sol, key).having(func.sum(t.n) > 0))
    return [(_text(k), sol, int(n)) for k, sol, n in rows]


def classes(session: Session) -> tuple[list[tuple], list[tuple]]:
    """([(model label, images, of them reviewed)], [(curator's label, images)]), from the counts."""
    t = ImageTotal
    reviewed = func.sum(case((t.reviewed_label != NO_TEXT, t.n), else_=0))
    model = session.execute(
        select(t.label, func.sum(t.n), reviewed).where(t.label != NO_TEXT).group_by(t.label).having(func.sum(t.n) > 0)
    ).all()
    curated = session.execute(
        select(t.reviewed_label, func.sum(t.n))
        .where(t.reviewed_label != NO_TEXT)
        .group_by(t.reviewed_label)
        .having(func.sum(t.n) > 0)
    ).all()
    return [(a, int(b), int(c)) for a, b, c in model], [(a, int(b)) for a, b in curated]
