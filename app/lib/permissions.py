"""The permission table: role -> resource -> access. Guards and templates both read it, nothing else decides.

Access levels are ordered: none < own < read < limited < full. ``own`` means "only records that belong to the
user"; services scope queries by owner for it. ``limited`` (support's analytics) hides revenue figures.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum


class Role(StrEnum):
    ADMIN = "admin"
    SUPPORT = "support"
    CUSTOMER = "customer"


class Resource(StrEnum):
    PRODUCTS = "products"
    ORDERS = "orders"
    CUSTOMERS = "customers"
    ANALYTICS = "analytics"
    SUBSCRIPTIONS = "subscriptions"
    REFUNDS = "refunds"
    PROMO_CODES = "promo_codes"
    PLANS = "plans"  # membership plans: prices, credits, downloads; moving subscribers to new prices (#16 item 1)
    ROOMS = "rooms"  # bookable rooms and desks: opening hours, prices, closures (#16 item 2)
    SETTINGS = "settings"  # the shop settings: legal name, tax numbers, time zone, defaults (#16 item 6)
    SYSTEM = "system"
    ADMIN_AREA = "admin_area"


class Access(IntEnum):
    NONE = 0
    OWN = 1
    READ = 2
    LIMITED = 3
    FULL = 4


_A, _S, _C = Role.ADMIN, Role.SUPPORT, Role.CUSTOMER

PERMISSIONS: dict[Resource, dict[Role, Access]] = {
    Resource.PRODUCTS: {_A: Access.FULL, _C: Access.NONE, _S: Access.READ},
    Resource.ORDERS: {_A: Access.FULL, _C: Access.OWN, _S: Access.FULL},
    Resource.CUSTOMERS: {_A: Access.FULL, _C: Access.OWN, _S: Access.FULL},
    Resource.ANALYTICS: {_A: Access.FULL, _C: Access.NONE, _S: Access.LIMITED},
    Resource.SUBSCRIPTIONS: {_A: Access.FULL, _C: Access.OWN, _S: Access.FULL},
    Resource.REFUNDS: {_A: Access.FULL, _C: Access.NONE, _S: Access.FULL},
    Resource.PROMO_CODES: {_A: Access.FULL, _C: Access.NONE, _S: Access.READ},
    # Support sees the plans (to answer customers); only admins change prices or move subscribers.
    Resource.PLANS: {_A: Access.FULL, _C: Access.NONE, _S: Access.READ},
    # Support sees the rooms and their hours (to answer customers); only admins change them.
    Resource.ROOMS: {_A: Access.FULL, _C: Access.NONE, _S: Access.READ},
    # Legal identity, tax numbers and alert recipients: admins only.
    Resource.SETTINGS: {_A: Access.FULL, _C: Access.NONE, _S: Access.NONE},
    Resource.SYSTEM: {_A: Access.FULL, _C: Access.NONE, _S: Access.NONE},
    # Entering /admin at all: staff only. Not in the seeds' matrix; it follows from it (customers see nothing there).
    Resource.ADMIN_AREA: {_A: Access.FULL, _C: Access.NONE, _S: Access.READ},
}


def access_for(role: Role | str | None, resource: Resource) -> Access:
    if role is None:
        return Access.NONE
    return PERMISSIONS[resource].get(Role(role), Access.NONE)


def can(role: Role | str | None, resource: Resource | str, needed: Access = Access.READ) -> bool:
    return access_for(role, Resource(resource)) >= needed


def is_staff(role: Role | str | None) -> bool:
    return role is not None and Role(role) in {Role.ADMIN, Role.SUPPORT}
