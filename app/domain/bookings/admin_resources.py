"""Bookable resources in the back office: the table, the form's rules, create/edit/archive, closures. Audited.

Rooms and desks are archived, never deleted (bookings and orders point at them). Every change writes an audit row
in the same transaction. Editing the opening hours or the capacity tidies the future: slots nobody ever booked that
the new hours no longer give are removed, and future slots take the new capacity where their bookings fit it.
Bookings already made are never touched; the customer keeps them.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from typing import Any
from uuid import UUID

import structlog
from sqlalchemy import Select, delete, exists, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import models as m
from app.db.queries import get_or_404
from app.domain.audit.services import Actor, changes, record_audit
from app.domain.bookings.schedule import (
    WEEKDAYS,
    OpeningHours,
    format_window,
    format_windows,
    from_json,
    parse_windows,
    to_json,
)
from app.lib.exceptions import FormError
from app.lib.forms import FormReader
from app.lib.money import plain_amount
from app.lib.tables import Column, Filter, TableSpec, TableState

log = structlog.get_logger()

KINDS = {"room": "Room", "desk": "Desk"}
SLUG = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
STATUS_LABELS = {"active": "Bookable", "archived": "Archived"}

RESOURCES_TABLE = TableSpec(
    dom_id="admin-resources",
    noun="rooms and desks",
    columns=(
        Column("name", "Name", m.BookableResource.name),
        Column("kind", "Kind", m.BookableResource.kind),
        Column("capacity", "Seats", m.BookableResource.capacity, numeric=True),
        Column("cost", "Credits"),
        Column("price", "Card price", m.BookableResource.price, numeric=True),
        Column("hours", "Opening hours"),
        Column("status", "Status"),
    ),
    default_sort="name",
    filters=(Filter("status", "Status", tuple(STATUS_LABELS.items()), "Any status"),),
    search_label="Name",
    tiebreak=(m.BookableResource.id,),
)


def resources_query(state: TableState) -> Select[Any]:
    stmt = select(m.BookableResource)
    status = state.filters.get("status")
    if status == "active":
        stmt = stmt.where(m.BookableResource.is_active.is_(True))
    elif status == "archived":
        stmt = stmt.where(m.BookableResource.is_active.is_(False))
    if state.q:
        stmt = stmt.where(m.BookableResource.name.ilike(f"%{state.q}%"))
    return stmt


def hours_summary(resource: m.BookableResource) -> str:
    """``Mon 09:00-17:00; Sat 10:00-14:00`` (local time), or how the slots are made when there are no hours."""
    hours = from_json(resource.opening_hours)
    if not hours:
        return "Hand-made slots"
    return "; ".join(
        f"{WEEKDAYS[d][:3]} {', '.join(format_window(w) for w in windows)}" for d, windows in sorted(hours.items())
    )


RESOURCES_CSV_HEADER = (
    "name",
    "slug",
    "kind",
    "capacity",
    "credit_type",
    "credit_cost",
    "price",
    "currency",
    "slot_minutes",
    "opening_hours_local",
    "book_ahead_days",
    "cancel_cutoff_hours",
    "status",
)


def resource_csv_row(resource: m.BookableResource) -> tuple[Any, ...]:
    return (
        resource.name,
        resource.slug,
        resource.kind,
        resource.capacity,
        resource.credit_type.code if resource.credit_type else "",
        resource.credit_cost if resource.credit_type else "",
        plain_amount(resource.price, resource.currency),
        resource.currency,
        resource.slot_minutes,
        hours_summary(resource),
        resource.book_ahead_days,
        resource.cancel_cutoff_hours,
        "active" if resource.is_active else "archived",
    )


# --- the form -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ResourceForm:
    name: str
    slug: str
    kind: str
    description: str
    capacity: int
    credit_type_id: UUID | None
    credit_cost: int
    price: int
    slot_minutes: int
    opening_hours: dict[str, Any]
    book_ahead_days: int
    cancel_cutoff_hours: int


def slugify(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:120]


def form_values(resource: m.BookableResource | None) -> dict[str, str]:
    """The form's fields as text: a new resource's defaults, or an existing one's values."""
    if resource is None:
        weekdays = {f"hours_{d}": "09:00-17:00" for d in range(5)}
        return {
            "kind": "room",
            "capacity": "1",
            "credit_cost": "1",
            "price": "",
            "slot_minutes": "60",
            "book_ahead_days": "14",
            "cancel_cutoff_hours": "24",
            **weekdays,
        }
    hours = from_json(resource.opening_hours)
    return {
        "name": resource.name,
        "slug": resource.slug,
        "kind": resource.kind,
        "description": resource.description,
        "capacity": str(resource.capacity),
        "credit_type_id": str(resource.credit_type_id or ""),
        "credit_cost": str(resource.credit_cost),
        "price": plain_amount(resource.price, resource.currency) if resource.price else "",
        "slot_minutes": str(resource.slot_minutes),
        "book_ahead_days": str(resource.book_ahead_days),
        "cancel_cutoff_hours": str(resource.cancel_cutoff_hours),
        **{f"hours_{d}": format_windows(hours.get(d, [])) for d in range(7)},
    }


def parse_resource_form(form: dict[str, str], credit_type_ids: set[UUID]) -> ResourceForm:
    """Validate the whole form; raise :class:`FormError` with every field's problem at once."""
    read = FormReader(form)
    name_message = "Enter a name of up to 120 characters, like Meeting room B."
    name = read.text("name", required=name_message, max_length=(120, name_message))
    slug = read.raw("slug").lower() or slugify(name)
    if not SLUG.match(slug) or len(slug) > 120:
        read.error("slug", "Use lower-case letters, digits and hyphens, like meeting-room-b.")
    kind = read.choice("kind", KINDS, "Choose a room or a desk.", default="room")
    capacity = read.integer(
        "capacity", "Enter the seats per slot, from 1 to 500.", minimum=1, maximum=500, default=1, required=True
    )
    credit_type_id = read.one_of("credit_type_id", credit_type_ids, "Choose a credit type from the list, or none.")
    raw_type = read.raw("credit_type_id")  # a type was chosen, even one not offered: its cost is asked for too
    credit_cost = 1
    if raw_type:
        credit_cost = read.integer(
            "credit_cost",
            "Enter the credits one slot costs, from 1 to 100.",
            minimum=1,
            maximum=100,
            default=1,
            required=True,
        )
    price = read.money("price", "CAD", "Enter a price such as 25.00, or leave it empty for no card payment.") or 0
    if price < 0:
        read.error("price", "Enter a price of zero or more.")
        price = 0
    if not raw_type and not price:
        read.error("price", "Choose a credit type or enter a card price: otherwise nobody can book it.")
    slot_minutes = read.integer(
        "slot_minutes",
        "Enter a slot length from 15 to 1440 minutes.",
        minimum=15,
        maximum=24 * 60,
        default=15,
        required=True,
    )
    if slot_minutes % 5:
        read.error("slot_minutes", "Use a multiple of 5 minutes, like 30 or 60.")
    hours: OpeningHours = {}
    for day in range(7):
        try:
            windows = parse_windows(read.raw(f"hours_{day}"))
        except ValueError as exc:
            read.error(f"hours_{day}", str(exc))
        else:
            if windows:
                hours[day] = windows
    if not hours and not any(k.startswith("hours_") for k in read.errors):
        read.error("hours_0", "Open it on at least one day of the week.")
    book_ahead = read.integer(
        "book_ahead_days", "Enter a number of days from 1 to 365.", minimum=1, maximum=365, default=1, required=True
    )
    cutoff = read.integer(
        "cancel_cutoff_hours",
        "Enter a number of hours from 0 to 720.",
        minimum=0,
        maximum=720,
        default=0,
        required=True,
    )
    read.done()
    return ResourceForm(
        name=name,
        slug=slug,
        kind=kind,
        description=read.raw("description")[:2000],
        capacity=capacity,
        credit_type_id=credit_type_id,
        credit_cost=credit_cost,
        price=price,
        slot_minutes=slot_minutes,
        opening_hours=to_json(hours),
        book_ahead_days=book_ahead,
        cancel_cutoff_hours=cutoff,
    )


async def credit_types(db: AsyncSession) -> list[m.CreditType]:
    return list(await db.scalars(select(m.CreditType).order_by(m.CreditType.name)))


# --- changes ------------------------------------------------------------------------------------------------------


def _snapshot(resource: m.BookableResource) -> dict[str, Any]:
    return {
        "name": resource.name,
        "slug": resource.slug,
        "kind": resource.kind,
        "description": resource.description,
        "capacity": resource.capacity,
        "credit_type_id": resource.credit_type_id,
        "credit_cost": resource.credit_cost,
        "price": resource.price,
        "slot_minutes": resource.slot_minutes,
        "opening_hours": resource.opening_hours,
        "book_ahead_days": resource.book_ahead_days,
        "cancel_cutoff_hours": resource.cancel_cutoff_hours,
        "archived": not resource.is_active,
    }


async def _slug_taken(db: AsyncSession, slug: str, except_id: UUID | None = None) -> bool:
    stmt = select(m.BookableResource.id).where(m.BookableResource.slug == slug)
    if except_id is not None:
        stmt = stmt.where(m.BookableResource.id != except_id)
    return await db.scalar(stmt) is not None


async def create_resource(db: AsyncSession, form: ResourceForm, *, actor: Actor) -> m.BookableResource:
    """A new room or desk, bookable at once from its opening hours. Commits."""
    if await _slug_taken(db, form.slug):
        raise FormError({"slug": f"Another room or desk uses {form.slug}: choose another."})
    resource = m.BookableResource(**asdict(form), currency="CAD")
    db.add(resource)
    await db.flush()
    await record_audit(
        db,
        actor,
        "resource.create",
        target=("resource", resource.id, resource.name),
        summary=f"Created {resource.name}",
        after=_snapshot(resource),
    )
    await db.commit()
    log.info("resource.created", resource_id=str(resource.id), slug=resource.slug)
    return resource


async def get_resource(db: AsyncSession, resource_id: UUID) -> m.BookableResource:
    return await get_or_404(db, m.BookableResource, resource_id, "That room or desk doesn't exist.")


async def update_resource(
    db: AsyncSession, resource: m.BookableResource, form: ResourceForm, *, actor: Actor, now: datetime | None = None
) -> bool:
    """Save the form; tidy future slots (see the module docstring). Commits. False when nothing changed."""
    if await _slug_taken(db, form.slug, except_id=resource.id):
        raise FormError({"slug": f"Another room or desk uses {form.slug}: choose another."})
    before = _snapshot(resource)
    for key, value in asdict(form).items():
        setattr(resource, key, value)
    old, new = changes(before, _snapshot(resource))
    if not new:
        return False
    current = now or datetime.now(UTC)
    if {"opening_hours", "slot_minutes"} & new.keys():
        # Never-booked future slots the old hours made: the new hours make their own the next time a day is shown.
        await db.execute(
            delete(m.BookingSlot).where(
                m.BookingSlot.resource_id == resource.id,
                m.BookingSlot.starts_at > current,
                m.BookingSlot.booked == 0,
                ~exists().where(m.Booking.slot_id == m.BookingSlot.id),
            )
        )
    if "capacity" in new:
        await db.execute(
            update(m.BookingSlot)
            .where(
                m.BookingSlot.resource_id == resource.id,
                m.BookingSlot.starts_at > current,
                m.BookingSlot.booked <= resource.capacity,
            )
            .values(capacity=resource.capacity)
            .execution_options(synchronize_session=False)
        )
    await record_audit(
        db,
        actor,
        "resource.update",
        target=("resource", resource.id, resource.name),
        summary=f"Edited {resource.name}: {', '.join(sorted(new))}",
        before=old,
        after=new,
    )
    await db.commit()
    log.info("resource.updated", resource_id=str(resource.id), fields=sorted(new))
    return True


async def set_archived(db: AsyncSession, resource: m.BookableResource, archived: bool, *, actor: Actor) -> bool:
    """Archive (nobody can book it; bookings made stay) or bring back. Commits. False when already so."""
    if resource.is_active is not archived:
        return False
    resource.is_active = not archived
    action = "resource.archive" if archived else "resource.restore"
    await record_audit(
        db,
        actor,
        action,
        target=("resource", resource.id, resource.name),
        summary=f"{'Archived' if archived else 'Restored'} {resource.name}",
        before={"archived": not archived},
        after={"archived": archived},
    )
    await db.commit()
    return True


# --- closures and holidays ----------------------------------------------------------------------------------------


async def closures(db: AsyncSession, resource_id: UUID | None, *, today: date) -> list[m.ResourceClosure]:
    """Closures that have not ended: the resource's own, or (``resource_id`` None) the shop-wide holidays."""
    owner = (
        m.ResourceClosure.resource_id.is_(None) if resource_id is None else m.ResourceClosure.resource_id == resource_id
    )
    return list(
        await db.scalars(
            select(m.ResourceClosure)
            .where(owner, m.ResourceClosure.ends_on >= today)
            .order_by(m.ResourceClosure.starts_on)
        )
    )


def parse_closure(form: dict[str, str], *, today: date) -> tuple[date, date, str]:
    """A closure's first and last day (the last defaults to the first: a one-day closure) and its reason."""
    read = FormReader(form)
    message = "Enter a date like 2026-12-24."
    starts = read.day("starts_on", message)
    ends = read.day("ends_on", message) if read.raw("ends_on") else starts
    for key, day in (("starts_on", starts), ("ends_on", ends)):
        if day is None:
            read.error(key, message)
    if starts is not None and ends is not None:
        if ends < starts:
            read.error("ends_on", "The last day must be on or after the first.")
        elif ends < today:
            read.error("ends_on", "That is in the past: choose today or later.")
    reason = read.text("reason", max_length=(200, "Keep the reason under 200 characters."))
    read.done()
    assert starts is not None
    assert ends is not None
    return starts, ends, reason


async def add_closure(
    db: AsyncSession,
    resource: m.BookableResource | None,
    starts_on: date,
    ends_on: date,
    reason: str,
    *,
    actor: Actor,
) -> m.ResourceClosure:
    """Close a resource (or, with None, every resource) on local days ``starts_on``..``ends_on``. Commits.

    Bookings already made on those days stay (staff contact those customers); nobody can make new ones."""
    closure = m.ResourceClosure(
        resource_id=resource.id if resource else None, starts_on=starts_on, ends_on=ends_on, reason=reason
    )
    db.add(closure)
    await db.flush()
    label = resource.name if resource else "every room and desk"
    span = f"{starts_on}" if starts_on == ends_on else f"{starts_on} to {ends_on}"
    await record_audit(
        db,
        actor,
        "resource.closure_add",
        target=("resource", resource.id, resource.name) if resource else ("closure", closure.id, "Holiday"),
        summary=f"Closed {label} {span}" + (f": {reason}" if reason else ""),
        after={"starts_on": starts_on, "ends_on": ends_on, "reason": reason},
    )
    await db.commit()
    return closure


async def remove_closure(db: AsyncSession, closure_id: UUID, *, actor: Actor) -> m.ResourceClosure:
    """Reopen: the closure row goes (the audit row keeps what it was). Commits."""
    closure = await get_or_404(db, m.ResourceClosure, closure_id, "That closure doesn't exist.", fresh=False)
    resource = await db.get(m.BookableResource, closure.resource_id) if closure.resource_id else None
    await record_audit(
        db,
        actor,
        "resource.closure_remove",
        target=("resource", resource.id, resource.name) if resource else ("closure", closure.id, "Holiday"),
        summary=f"Reopened {resource.name if resource else 'every room and desk'} "
        f"{closure.starts_on} to {closure.ends_on}",
        before={"starts_on": closure.starts_on, "ends_on": closure.ends_on, "reason": closure.reason},
    )
    await db.delete(closure)
    await db.commit()
    return closure
