"""Reading a submitted form into typed values, every field's problem collected at once (#17 item 5).

A form's parser reads each field through one ``FormReader`` and builds its typed result (a frozen dataclass, e.g.
``PromoForm``) from what the reader returns; ``reader.done()`` then raises one ``FormError`` that names every
field in trouble, and ``render_form`` (app/lib/htmx.py) shows each message beside its field. The messages are
the parser's own: the reader knows the kinds of field, the form knows what to say to its user.

    read = FormReader(data)
    name = read.text("name", required="Give the category a name.", max_length=(80, "Keep it under 80."))
    position = read.integer("position", "Enter a whole number.", minimum=-1000, maximum=1000, default=0)
    read.done()
    return CategoryForm(name=name, position=position)

A field that fails keeps the reader's fallback (``""``, ``None`` or the default) so the parser can go on
reading the others; nothing built from a failed reader is ever returned, since ``done()`` raises first.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import overload
from uuid import UUID

from litestar.params import URLEncodedBody

from app.lib.exceptions import FormError
from app.lib.money import parse_money

# A form's body as a handler takes it: each field as sent (a repeated field, such as a list of checkboxes, is read
# with ``request.form()``). A mapping on purpose: a typed body would let Litestar answer bad input with a bare 400
# before the form could be shown again; the form's parser types it instead, through ``FormReader``.
FormData = URLEncodedBody[dict[str, str]]

CHECKED = frozenset({"on", "true", "1", "yes"})


class FormReader:
    """One submitted form, read field by field; the problems are kept per field, the first one of each wins."""

    def __init__(self, data: Mapping[str, str]) -> None:
        self.data = data
        self.errors: dict[str, str] = {}

    def raw(self, name: str, default: str = "") -> str:
        """The field as sent, surrounding spaces removed."""
        return str(self.data.get(name, default)).strip()

    def error(self, name: str, message: str) -> None:
        """Put ``message`` beside ``name`` (a rule across fields, or one the reader has no kind for)."""
        self.errors.setdefault(name, message)

    def text(
        self,
        name: str,
        *,
        required: str = "",
        max_length: tuple[int, str] | None = None,
        default: str = "",
        multiline: bool = False,
    ) -> str:
        """Free text. ``required``: the message when it is empty; ``max_length``: (limit, message). A ``multiline``
        field (a textarea) has the browser's CRLF line ends made LF, so its length is counted as it will be stored."""
        value = self.raw(name, default)
        if multiline:
            value = value.replace("\r\n", "\n")
        if not value and required:
            self.error(name, required)
        elif max_length is not None and len(value) > max_length[0]:
            self.error(name, max_length[1])
        return value

    def choice(self, name: str, choices: Collection[str], message: str, *, default: str = "") -> str:
        """One of ``choices`` (as sent, or ``default`` when the field is absent)."""
        value = self.raw(name, default)
        if value not in choices:
            self.error(name, message)
        return value

    def one_of(self, name: str, ids: Iterable[UUID], message: str, *, required: bool = False) -> UUID | None:
        """The id picked in a ``<select>`` of ``ids`` (a category, a credit type); empty gives None (or ``message``
        when ``required``), an id not offered gives ``message``."""
        text = self._filled(name, message, required=required)
        if not text:
            return None
        picked = next((i for i in ids if str(i) == text), None)
        if picked is None:
            self.error(name, message)
        return picked

    @overload
    def integer(
        self,
        name: str,
        message: str,
        *,
        minimum: int | None = None,
        maximum: int | None = None,
        default: int,
        required: bool = False,
    ) -> int: ...
    @overload
    def integer(
        self,
        name: str,
        message: str,
        *,
        minimum: int | None = None,
        maximum: int | None = None,
        default: None = None,
        required: bool = False,
    ) -> int | None: ...
    def integer(
        self,
        name: str,
        message: str,
        *,
        minimum: int | None = None,
        maximum: int | None = None,
        default: int | None = None,
        required: bool = False,
    ) -> int | None:
        """A whole number within [minimum, maximum]; empty gives ``default`` (or ``message`` when ``required``)."""
        text = self._filled(name, message, required=required)
        if not text:
            return default
        try:
            value = int(text)
        except ValueError:
            self.error(name, message)
            return default
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            self.error(name, message)
            return default
        return value

    def money(
        self, name: str, currency: str, message: str, *, positive: str = "", required: bool = False
    ) -> int | None:
        """An amount ("12.50", "$1,200") in minor units of ``currency``; ``positive``: the message for zero or less."""
        text = self._filled(name, message, required=required)
        if not text:
            return None
        try:
            amount = parse_money(text, currency)
        except (ValueError, InvalidOperation):
            self.error(name, message)
            return None
        if positive and amount <= 0:
            self.error(name, positive)
            return None
        return amount

    def percent_bps(self, name: str, message: str, *, decimals: str) -> int | None:
        """A percentage from 1 to 100 ("15", "12.5 %") in hundredths of a percent; ``decimals``: the message for
        more than two decimals."""
        try:
            percent = Decimal(self.raw(name).rstrip("%").strip())
        except InvalidOperation:
            self.error(name, message)
            return None
        if not percent.is_finite() or not Decimal(1) <= percent <= Decimal(100):
            self.error(name, message)
            return None
        hundredths = percent * 100
        if hundredths != hundredths.to_integral_value():
            self.error(name, decimals)
            return None
        return int(hundredths)

    def day(self, name: str, message: str, *, not_before: date | None = None, too_early: str = "") -> date | None:
        """A date as ``<input type="date">`` sends it (2027-01-31); empty gives None."""
        text = self.raw(name)
        if not text:
            return None
        try:
            value = date.fromisoformat(text)
        except ValueError:
            self.error(name, message)
            return None
        if not_before is not None and value < not_before:
            self.error(name, too_early or message)
            return None
        return value

    def _filled(self, name: str, message: str, *, required: bool) -> str:
        """The field's text; when it is empty, "" (and ``message`` beside it if the field is ``required``)."""
        text = self.raw(name)
        if not text and required:
            self.error(name, message)
        return text

    def checkbox(self, name: str) -> bool:
        return self.raw(name).lower() in CHECKED

    def form_token(self, expired: str) -> str:
        """The rendering's one-use token (``new_form_token``: the idempotency key of what the form does). Without
        it the form is stale, and nothing can be done safely: raise at once with ``expired`` and the field errors
        found so far. Read it last."""
        token = self.raw("form_token")
        if not token or len(token) > 64:
            raise FormError(dict(self.errors), expired)
        return token

    def done(self, message: str = "Please correct the errors below.") -> None:
        """Raise one ``FormError`` with every field's problem, if there is any."""
        if self.errors:
            raise FormError(dict(self.errors), message)
