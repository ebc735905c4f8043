"""The invoice as a PDF, drawn with fpdf2 from the same ``InvoiceView`` as the HTML page.

fpdf2 is pure Python (a fresh machine has only Python and make: WeasyPrint would need the system's Pango). Its
built-in Helvetica covers Latin-1, which is what French and English names and addresses use; anything outside it
(curly quotes, dashes, other scripts) is replaced by its closest ASCII or "?", so a name never breaks the PDF.
"""

from __future__ import annotations

import unicodedata

from fpdf import FPDF

from app.domain.orders.invoices import Amount, InvoiceView
from app.lib.money import format_money

# Typographic marks outside Latin-1, by code point: curly quotes, dashes, minus sign, ellipsis, narrow no-break space.
_REPLACEMENTS = str.maketrans(
    {
        "\u2018": "'",
        "\u2019": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u2013": "-",
        "\u2014": "-",
        "\u2212": "-",
        "\u2026": "...",
        "\u202f": " ",
    }
)


def _latin1(text: str) -> str:
    text = text.translate(_REPLACEMENTS)
    if all(ord(c) < 256 for c in text):
        return text
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c if ord(c) < 256 else "?" for c in decomposed if not unicodedata.combining(c))


class _Document(FPDF):
    def __init__(self) -> None:
        super().__init__(orientation="portrait", unit="mm", format="A4")
        self.set_auto_page_break(auto=True, margin=18)
        self.set_margins(18, 18, 18)

    def write_line(self, text: str, *, size: float = 10, bold: bool = False, height: float = 5.5) -> None:
        self.set_font("Helvetica", "B" if bold else "", size)
        self.cell(0, height, _latin1(text), new_x="LMARGIN", new_y="NEXT")

    def row(self, cells: list[tuple[str, float, str]], *, bold: bool = False) -> None:
        """One table row: (text, width in mm, align)."""
        self.set_font("Helvetica", "B" if bold else "", 9.5)
        for text, width, align in cells:
            self.cell(width, 6, _latin1(text), align=align)
        self.ln(6)

    def total_row(self, label: str, value: str, *, bold: bool = False) -> None:
        self.row([("", 70, "L"), (label, 70, "R"), (value, 34, "R")], bold=bold)


def _amounts(pdf: _Document, rows: list[Amount], currency: str) -> None:
    for tax in rows:
        pdf.total_row(tax.label, format_money(tax.amount, currency))


def render_invoice_pdf(view: InvoiceView) -> bytes:
    """The PDF bytes of ``view``: seller, buyer, lines, tax per component, total, then one section per credit note."""
    money = view.currency
    pdf = _Document()
    pdf.set_title(f"Invoice {view.number}")
    pdf.set_author(_latin1(view.seller_name))
    pdf.set_creator("Cartwright")
    pdf.add_page()

    pdf.write_line(view.seller_name, size=15, bold=True, height=8)
    for line in view.seller_address:
        pdf.write_line(line)
    if view.seller_email:
        pdf.write_line(view.seller_email)
    if view.gst_hst_number:
        pdf.write_line(f"GST/HST registration number: {view.gst_hst_number}")
    if view.qst_number:
        pdf.write_line(f"QST registration number: {view.qst_number}")
    pdf.ln(4)

    pdf.write_line(f"Invoice {view.number}", size=13, bold=True, height=7)
    pdf.write_line(f"Date: {view.issued_on}")
    pdf.write_line(f"Order: {view.order_number}")
    pdf.ln(3)
    pdf.write_line("Billed to", bold=True)
    pdf.write_line(view.buyer_name)
    pdf.write_line(view.buyer_email)
    if view.buyer_address:
        pdf.write_line(view.buyer_address)
    pdf.ln(4)

    pdf.row(
        [("Item", 80, "L"), ("Qty", 14, "R"), ("Unit price", 28, "R"), ("Tax", 24, "R"), ("Amount", 28, "R")], bold=True
    )
    for item in view.lines:
        pdf.row(
            [
                (item.description[:60], 80, "L"),
                (str(item.quantity), 14, "R"),
                (format_money(item.unit_price, money), 28, "R"),
                (format_money(item.tax, money), 24, "R"),
                (format_money(item.subtotal - item.discount, money), 28, "R"),
            ]
        )
    pdf.ln(2)
    pdf.total_row("Subtotal", format_money(view.subtotal, money))
    if view.discount:
        pdf.total_row(view.discount_label, format_money(-view.discount, money))
    _amounts(pdf, view.taxes, money)
    pdf.total_row("Total", format_money(view.total, money), bold=True)

    for note in view.credit_notes:
        pdf.ln(6)
        pdf.write_line(f"Credit note {note.number} (refers to invoice {view.number})", size=12, bold=True, height=7)
        pdf.write_line(f"Date: {note.issued_on}")
        if note.note:
            pdf.write_line(note.note)
        pdf.total_row("Amount before tax", format_money(note.net, money))
        _amounts(pdf, note.taxes, money)
        pdf.total_row("Total credited", format_money(note.total, money), bold=True)

    return bytes(pdf.output())
