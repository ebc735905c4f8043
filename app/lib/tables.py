"""The one back-office table pattern: server-side sort, filter, search and pagination, state in the URL.

A domain declares a ``TableSpec`` (columns with the SQL they sort by, filters, search) and a query function
``TableState -> Select`` next to its service. The controller calls ``table_for(request, db, spec, query)``, which
reads the state from the query string and returns a ``TableView`` page for ``templates/components/table.html.j2``
(controls, headers, rows through the caller's row macro, bulk actions, pagination, the empty state); its export
route returns ``export_for(...)``, the same filter and order streamed as CSV.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeAlias
from urllib.parse import urlencode
from uuid import UUID

from litestar import Request
from litestar.response import Stream
from sqlalchemy import ColumnElement, Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

if TYPE_CHECKING:
    from app.lib.runtime import Runtime

SortKey = ColumnElement[Any] | InstrumentedAttribute[Any]
# Any SELECT, whatever it returns (one entity, or an entity with extra columns).
Query: TypeAlias = Select[*tuple[Any, ...]]


@dataclass(frozen=True, slots=True)
class Column:
    key: str
    label: str
    sort: SortKey | None = None  # the SQL the column sorts by; None: not sortable
    numeric: bool = False
    newest_first: bool = False  # a date people read latest-first: its first click sorts descending

    @property
    def sortable(self) -> bool:
        return self.sort is not None


@dataclass(frozen=True, slots=True)
class Filter:
    key: str
    label: str
    options: tuple[tuple[str, str], ...]  # (value, label); the empty value means "any"
    any_label: str = "Any"


@dataclass(frozen=True, slots=True)
class BulkAction:
    route: str  # url_for name of a POST route that receives the checked row ids as ``ids``
    label: str
    confirm: str = ""


@dataclass(frozen=True, slots=True)
class TableSpec:
    dom_id: str
    noun: str  # "orders": used in captions and the empty state
    columns: tuple[Column, ...]
    default_sort: str  # a column key, "-" prefixed for descending
    filters: tuple[Filter, ...] = ()
    search_label: str = ""  # empty: no search box
    per_page: int = 25
    bulk_actions: tuple[BulkAction, ...] = ()
    tiebreak: tuple[SortKey, ...] = ()  # appended to every ORDER BY so pages never overlap

    def column(self, key: str) -> Column | None:
        return next((c for c in self.columns if c.key == key), None)

    def with_filter(self, extra: Filter) -> TableSpec:
        """A copy with one more filter, for options known only at request time (the event types stored so far)."""
        return replace(self, filters=(*[f for f in self.filters if f.key != extra.key], extra))


@dataclass(frozen=True, slots=True)
class TableState:
    """What the visitor asked for, validated against the spec: unknown sorts and filter values are dropped."""

    sort: str
    page: int = 1
    q: str = ""
    filters: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_query(cls, spec: TableSpec, params: Mapping[str, Any]) -> TableState:
        sort = str(params.get("sort") or spec.default_sort)
        column = spec.column(sort.removeprefix("-"))
        if column is None or not column.sortable:
            sort = spec.default_sort
        try:
            page = max(1, int(params.get("page") or 1))
        except ValueError:
            page = 1
        chosen: dict[str, str] = {}
        for f in spec.filters:
            value = str(params.get(f.key) or "")
            if value and value in {v for v, _ in f.options}:
                chosen[f.key] = value
        q = str(params.get("q") or "").strip()[:120] if spec.search_label else ""
        return cls(sort=sort, page=page, q=q, filters=chosen)

    @property
    def sort_key(self) -> str:
        return self.sort.removeprefix("-")

    @property
    def descending(self) -> bool:
        return self.sort.startswith("-")

    def params(self, **changes: Any) -> dict[str, str]:
        state = replace(self, **changes) if changes else self
        out = {k: v for k, v in state.filters.items() if v}
        if state.q:
            out["q"] = state.q
        out["sort"] = state.sort
        if state.page > 1:
            out["page"] = str(state.page)
        return out


@dataclass(slots=True)
class TableView:
    """One rendered page of a table: everything the template macro needs, URLs included."""

    spec: TableSpec
    state: TableState
    rows: Sequence[Any]
    total: int
    base_url: str
    export_url: str = ""

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.spec.per_page))

    def url(self, **changes: Any) -> str:
        return f"{self.base_url}?{urlencode(self.state.params(**changes))}"

    def sort_url(self, column: Column) -> str:
        # First click sorts ascending, except numbers and latest-first dates; the next click reverses.
        if self.state.sort_key == column.key:
            new = column.key if self.state.descending else f"-{column.key}"
        else:
            new = f"-{column.key}" if column.numeric or column.newest_first else column.key
        return self.url(sort=new, page=1)

    def aria_sort(self, column: Column) -> str:
        if self.state.sort_key != column.key:
            return "none"
        return "descending" if self.state.descending else "ascending"

    @property
    def export_href(self) -> str:
        if not self.export_url:
            return ""
        params = self.state.params(page=1)
        params.pop("page", None)
        return f"{self.export_url}?{urlencode(params)}"


def ordered(spec: TableSpec, state: TableState, stmt: Query) -> Query:
    column = spec.column(state.sort_key)
    # TableState.from_query only lets sortable columns through.
    assert column is not None
    assert column.sort is not None
    primary = column.sort.desc() if state.descending else column.sort.asc()
    return stmt.order_by(primary, *spec.tiebreak)


def parse_ids(values: Iterable[object]) -> list[UUID]:
    """The row ids a bulk action (or a multi-select) posted; anything that is not a UUID is dropped."""
    out: list[UUID] = []
    for value in values:
        try:
            out.append(UUID(str(value)))
        except ValueError:
            continue
    return out


async def fetch_page(
    db: AsyncSession, spec: TableSpec, state: TableState, stmt: Query, *, base_url: str, export_url: str = ""
) -> TableView:
    """Count the filtered rows, then fetch the requested page in the requested order (clamped to the last page)."""
    total = await db.scalar(select(func.count()).select_from(stmt.order_by(None).subquery())) or 0
    pages = max(1, -(-total // spec.per_page))
    if state.page > pages:
        state = replace(state, page=pages)
    result = await db.execute(ordered(spec, state, stmt).limit(spec.per_page).offset((state.page - 1) * spec.per_page))
    rows = list(result.scalars().unique()) if len(stmt.column_descriptions) == 1 else list(result.all())
    return TableView(spec, state, rows, total, base_url, export_url)


async def csv_rows(
    db: AsyncSession,
    stmt: Query,
    header: Iterable[str],
    row: Callable[[Any], Iterable[Any]],
    *,
    batch: int = 1000,
) -> AsyncIterator[bytes]:
    """Stream a query as CSV: server-side cursor, ``batch`` rows in memory at a time, whatever the row count."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(list(header))
    result = await db.stream(stmt.execution_options(yield_per=batch))
    single = len(stmt.column_descriptions) == 1
    async for partition in result.partitions(batch):
        for item in partition:
            writer.writerow([_cell(v) for v in row(item[0] if single else item)])
        yield buffer.getvalue().encode()
        buffer.seek(0)
        buffer.truncate()
    if buffer.tell():
        yield buffer.getvalue().encode()


def _cell(value: Any) -> Any:
    # Spreadsheets execute cells starting with = + - @: prefix them so an exported email can't become a formula.
    if isinstance(value, str) and value[:1] in {"=", "+", "-", "@", "\t", "\r"}:
        return "'" + value
    return value


def csv_response(
    runtime: Runtime,
    stmt: Query,
    header: Iterable[str],
    row: Callable[[Any], Iterable[Any]],
    *,
    filename: str,
) -> Stream:
    """A streamed CSV download. It reads through a session of its own: the request's is closed once headers go."""

    async def body() -> AsyncIterator[bytes]:
        async with runtime.db() as db:
            async for chunk in csv_rows(db, stmt, header, row):
                yield chunk

    return Stream(
        body(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"', "Cache-Control": "no-store"},
    )


async def table_for(
    request: Request[Any, Any, Any],
    db: AsyncSession,
    spec: TableSpec,
    query: Callable[[TableState], Query],
    *,
    export_route: str = "",
) -> TableView:
    """The page of ``spec`` the request's query string asks for; links point back at the request's own route."""
    state = TableState.from_query(spec, request.query_params)
    return await fetch_page(
        db,
        spec,
        state,
        query(state),
        base_url=request.url.path,
        export_url=request.app.route_reverse(export_route) if export_route else "",
    )


def export_for(
    request: Request[Any, Any, Any],
    runtime: Runtime,
    spec: TableSpec,
    query: Callable[[TableState], Query],
    header: Iterable[str],
    row: Callable[[Any], Iterable[Any]],
    *,
    name: str,
) -> Stream:
    """Every row of the request's filter, in its order, as a streamed CSV named ``<name>-<UTC time>.csv``."""
    state = TableState.from_query(spec, request.query_params)
    filename = f"{name}-{datetime.now(UTC):%Y%m%d-%H%M}.csv"
    return csv_response(runtime, ordered(spec, state, query(state)), header, row, filename=filename)
