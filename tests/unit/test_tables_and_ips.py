"""Back-office table state from the URL, CSV formula neutralisation, and the client IP behind trusted proxies."""

from __future__ import annotations

import pytest

from app.lib.client_ip import client_ip, parse_networks
from app.lib.tables import Column, Filter, TableSpec, TableState, _cell

SPEC = TableSpec(
    dom_id="t",
    noun="orders",
    columns=(Column("name", "Name", sort=object()), Column("notes", "Notes")),  # type: ignore[arg-type]
    default_sort="-name",
    filters=(Filter("status", "Status", (("paid", "Paid"), ("refunded", "Refunded"))),),
    search_label="Search",
)


def test_table_state_keeps_valid_choices() -> None:
    state = TableState.from_query(SPEC, {"sort": "name", "page": "3", "q": "  ann ", "status": "paid"})
    assert (state.sort, state.page, state.q, dict(state.filters)) == ("name", 3, "ann", {"status": "paid"})
    assert state.params(page=1) == {"status": "paid", "q": "ann", "sort": "name"}


@pytest.mark.parametrize(
    ("params", "sort", "page"),
    [
        ({"sort": "bogus"}, "-name", 1),  # unknown column
        ({"sort": "notes"}, "-name", 1),  # not sortable
        ({"page": "0"}, "-name", 1),
        ({"page": "-4"}, "-name", 1),
        ({"page": "two"}, "-name", 1),
        ({"sort": "-name", "page": "2"}, "-name", 2),
    ],
)
def test_table_state_clamps_and_drops_what_it_does_not_know(params: dict[str, str], sort: str, page: int) -> None:
    state = TableState.from_query(SPEC, params)
    assert (state.sort, state.page) == (sort, page)


def test_unknown_filter_values_are_dropped_and_search_is_capped() -> None:
    state = TableState.from_query(SPEC, {"status": "stolen", "q": "x" * 500})
    assert dict(state.filters) == {} and state.q == "x" * 120


@pytest.mark.parametrize("value", ["=HYPERLINK(1)", "+1", "-2+3", "@SUM(A1)", "\tx", "\rx"])
def test_csv_cells_that_a_spreadsheet_would_run_are_quoted(value: str) -> None:
    assert _cell(value) == "'" + value


def test_csv_cells_that_are_safe_are_left_alone() -> None:
    assert [_cell(v) for v in ("ann@example.com", "", 5, -5, None)] == ["ann@example.com", "", 5, -5, None]


def test_client_ip_with_ipv6_and_garbage() -> None:
    proxies = parse_networks(" 10.0.0.0/8 , ,2001:db8::/32")
    assert client_ip("2001:db8::1", "198.51.100.9", proxies) == "198.51.100.9"
    assert client_ip("10.1.2.3", "10.0.0.5, 10.0.0.9", proxies) == "10.0.0.5"  # every hop ours: the leftmost
    assert client_ip("10.1.2.3", "not-an-ip, 10.0.0.9", proxies) == "not-an-ip"  # untrusted, so it stops there
    assert client_ip("10.1.2.3", " , ", proxies) == "10.1.2.3"
