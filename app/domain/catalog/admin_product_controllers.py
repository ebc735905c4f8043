"""Products in the back office. Reading needs products:read (support sees everything read-only); every change
products:full. After each committed change the public catalog cache is invalidated and Stripe is synced."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit
from uuid import UUID

import structlog
from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath
from litestar.response import Stream, Template
from saq import Queue
from sqlalchemy.ext.asyncio import AsyncSession

from app.domain.audit.services import Actor
from app.domain.catalog.admin_products import (
    PRODUCTS_CSV_HEADER,
    UploadedFile,
    all_categories,
    create_product,
    form_values,
    get_product,
    parse_product_form,
    product_csv_row,
    products_query,
    products_table,
    set_active,
    set_cover,
    set_digital_file,
    update_product,
)
from app.domain.catalog.cache import invalidate_catalog
from app.domain.catalog.covers import CoverError, store_cover
from app.domain.catalog.jobs import sync_now_or_later
from app.lib.exceptions import ApplicationError, FormError
from app.lib.forms import FormData
from app.lib.htmx import flash, redirect, render, render_form
from app.lib.permissions import Access, Resource
from app.lib.runtime import Runtime
from app.lib.storage import FileTooLargeError, StorageUnavailableError, UploadWriter
from app.lib.tables import TableState, export_for, fetch_page, parse_ids, table_for
from app.lib.uploads import UploadError, read_upload
from app.lib.urls import same_site_path
from app.server.auth import requires

log = structlog.get_logger()
# The bucket did not answer: the product still has its previous file or cover, so nothing is lost by retrying.
STORAGE_DOWN = "The file store isn't answering, so nothing was changed. Try again in a minute."
FULL = [requires(Resource.PRODUCTS, Access.FULL)]
UNSYNCED = "Saved; Stripe sync will retry."


def _mib(size: int) -> str:
    return f"{size / (1024 * 1024):.0f} MB"


def _safe_name(filename: str) -> str:
    name = filename.replace("\\", "/").rsplit("/", 1)[-1].strip()
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip(".-")[:120]
    return cleaned or "file"


async def _form_page(
    request: Request[Any, Any, Any],
    db: AsyncSession,
    product: Any,
    *,
    form: dict[str, str] | None = None,
    error: ApplicationError | None = None,
    status_code: int | None = None,
) -> Template:
    return render_form(
        request,
        "admin/product.html.j2",
        {"product": product, "categories": await all_categories(db), "settings": request.app.state.runtime.settings},
        fragment="admin/_product_form.html.j2",
        form=form if form is not None else form_values(product),
        error=error,
        status_code=status_code,
    )


async def _after_change(runtime: Runtime, queue: Queue, request: Request[Any, Any, Any], product_id: UUID) -> None:
    await invalidate_catalog(runtime.redis)
    if not await sync_now_or_later(runtime, queue, product_id):
        flash(request, UNSYNCED, "warning")


class AdminProductController(Controller):
    path = "/admin/products"
    guards = [requires(Resource.PRODUCTS, Access.READ)]

    @get("/", name="admin:products")
    async def products(self, request: Request[Any, Any, Any], db_session: NamedDependency[AsyncSession]) -> Template:
        categories = await all_categories(db_session)
        table = await table_for(
            request,
            db_session,
            products_table(categories),
            lambda state: products_query(state, categories),
            export_route="admin:products_export",
        )
        return render(request, "admin/products.html.j2", {"table": table}, fragment="admin/_products_table.html.j2")

    @get("/export.csv", name="admin:products_export")
    async def export(
        self,
        request: Request[Any, Any, Any],
        db_session: NamedDependency[AsyncSession],
        runtime: NamedDependency[Runtime],
    ) -> Stream:
        categories = await all_categories(db_session)
        return export_for(
            request,
            runtime,
            products_table(categories),
            lambda state: products_query(state, categories),
            PRODUCTS_CSV_HEADER,
            product_csv_row,
            name="products",
        )

    @get("/new", name="admin:product_new", guards=FULL)
    async def new(self, request: Request[Any, Any, Any], db_session: NamedDependency[AsyncSession]) -> Template:
        return await _form_page(request, db_session, None)

    @post("/", name="admin:product_create", guards=FULL)
    async def create(
        self,
        request: Request[Any, Any, Any],
        data: FormData,
        db_session: NamedDependency[AsyncSession],
        runtime: NamedDependency[Runtime],
        queue: NamedDependency[Queue],
        actor: NamedDependency[Actor],
    ) -> Template | Response[Any]:
        form = dict(data)
        try:
            values = parse_product_form(form, await all_categories(db_session))
            product = await create_product(db_session, values, actor=actor)
        except FormError as exc:
            return await _form_page(request, db_session, None, form=form, error=exc)
        log.info("admin.product_created", product=str(product.id))
        flash(request, f"“{product.name}” created. Add its cover and file below.", "success")
        await _after_change(runtime, queue, request, product.id)
        return redirect(request, request.app.route_reverse("admin:product", product_id=product.id))

    @get("/{product_id:uuid}", name="admin:product")
    async def product(
        self, request: Request[Any, Any, Any], product_id: FromPath[UUID], db_session: NamedDependency[AsyncSession]
    ) -> Template:
        return await _form_page(request, db_session, await get_product(db_session, product_id))

    @post("/{product_id:uuid}", name="admin:product_update", guards=FULL)
    async def update(
        self,
        request: Request[Any, Any, Any],
        product_id: FromPath[UUID],
        data: FormData,
        db_session: NamedDependency[AsyncSession],
        runtime: NamedDependency[Runtime],
        queue: NamedDependency[Queue],
        actor: NamedDependency[Actor],
    ) -> Template | Response[Any]:
        form = dict(data)
        product = await get_product(db_session, product_id)
        try:
            values = parse_product_form(form, await all_categories(db_session))
            changed = await update_product(db_session, product, values, actor=actor)
        except FormError as exc:
            product = await get_product(db_session, product_id)
            return await _form_page(request, db_session, product, form=form, error=exc)
        flash(request, "Saved." if changed else "Nothing changed.", "success")
        if changed:
            await _after_change(runtime, queue, request, product_id)
        return redirect(request, request.app.route_reverse("admin:product", product_id=product_id))

    @post("/archive", name="admin:products_archive", guards=FULL)
    async def archive(
        self,
        request: Request[Any, Any, Any],
        db_session: NamedDependency[AsyncSession],
        runtime: NamedDependency[Runtime],
        queue: NamedDependency[Queue],
        actor: NamedDependency[Actor],
    ) -> Response[Any]:
        """The product page's button (a plain form): back to the page it came from."""
        message = await self._set_active(request, db_session, runtime, queue, actor, active=False)
        return await self._back(request, message)

    @post("/activate", name="admin:products_activate", guards=FULL)
    async def activate(
        self,
        request: Request[Any, Any, Any],
        db_session: NamedDependency[AsyncSession],
        runtime: NamedDependency[Runtime],
        queue: NamedDependency[Queue],
        actor: NamedDependency[Actor],
    ) -> Response[Any]:
        message = await self._set_active(request, db_session, runtime, queue, actor, active=True)
        return await self._back(request, message)

    @post("/table/archive", name="admin:products_table_archive", guards=FULL)
    async def table_archive(
        self,
        request: Request[Any, Any, Any],
        db_session: NamedDependency[AsyncSession],
        runtime: NamedDependency[Runtime],
        queue: NamedDependency[Queue],
        actor: NamedDependency[Actor],
    ) -> Template:
        """The table's bulk button (HTMX): the table again, where it was (the URL of the page it sits on)."""
        message = await self._set_active(request, db_session, runtime, queue, actor, active=False)
        return await self._table_after_bulk(request, db_session, message)

    @post("/table/activate", name="admin:products_table_activate", guards=FULL)
    async def table_activate(
        self,
        request: Request[Any, Any, Any],
        db_session: NamedDependency[AsyncSession],
        runtime: NamedDependency[Runtime],
        queue: NamedDependency[Queue],
        actor: NamedDependency[Actor],
    ) -> Template:
        message = await self._set_active(request, db_session, runtime, queue, actor, active=True)
        return await self._table_after_bulk(request, db_session, message)

    async def _set_active(
        self,
        request: Request[Any, Any, Any],
        db: AsyncSession,
        runtime: Runtime,
        queue: Queue,
        actor: Actor,
        *,
        active: bool,
    ) -> str:
        """Archive or activate the posted ids; the message that says how many."""
        form = await request.form()
        ids = parse_ids(form.getall("ids") if "ids" in form else [])
        changed = await set_active(db, ids, active=active, actor=actor)
        if changed:
            await invalidate_catalog(runtime.redis)
            synced = [await sync_now_or_later(runtime, queue, product_id) for product_id in changed]
            if not all(synced):
                flash(request, UNSYNCED, "warning")
        log.info("admin.products_set_active", active=active, count=len(changed))
        return f"{len(changed)} product(s) {'activated' if active else 'archived'}."

    @staticmethod
    async def _back(request: Request[Any, Any, Any], message: str) -> Response[Any]:
        flash(request, message, "success")
        form = await request.form()
        listing = request.app.route_reverse("admin:products")
        back = same_site_path(str(form.get("next") or ""), listing)
        if not back.startswith("/admin/products"):
            back = listing
        return redirect(request, back)

    async def _table_after_bulk(self, request: Request[Any, Any, Any], db: AsyncSession, message: str) -> Template:
        categories = await all_categories(db)
        spec = products_table(categories)
        current = request.headers.get("hx-current-url", "")
        state = TableState.from_query(spec, dict(parse_qsl(urlsplit(current).query)))
        table = await fetch_page(
            db,
            spec,
            state,
            products_query(state, categories),
            base_url=request.app.route_reverse("admin:products"),
            export_url=request.app.route_reverse("admin:products_export"),
        )
        return render(
            request,
            "admin/products.html.j2",
            {"table": table, "bulk_message": message},
            fragment="admin/_products_table.html.j2",
        )

    @post("/{product_id:uuid}/cover", name="admin:product_cover", guards=FULL, request_max_body_size=None)
    async def cover(
        self,
        request: Request[Any, Any, Any],
        product_id: FromPath[UUID],
        db_session: NamedDependency[AsyncSession],
        runtime: NamedDependency[Runtime],
        actor: NamedDependency[Actor],
    ) -> Template | Response[Any]:
        """The cover image: read into memory up to COVER_MAX_BYTES (Pillow needs all of it), checked, thumbnailed."""
        settings = runtime.settings
        product = await get_product(db_session, product_id)
        limit = settings.cover_max_bytes
        data = bytearray()

        def write(chunk: bytes) -> None:
            data.extend(chunk)
            if len(data) > limit:
                raise FileTooLargeError

        try:
            await read_upload(request, "cover", lambda _name, _type: None, write)
            key = await store_cover(runtime.storage, product.id, bytes(data))
        except FileTooLargeError:
            return await self._upload_error(
                request, db_session, product, "cover", f"Covers are limited to {_mib(limit)}."
            )
        except (UploadError, CoverError) as exc:
            return await self._upload_error(request, db_session, product, "cover", str(exc))
        except StorageUnavailableError as exc:
            log.error("admin.storage_unavailable", product=str(product_id), error=str(exc))
            return await self._upload_error(request, db_session, product, "cover", STORAGE_DOWN, status_code=503)
        old = await set_cover(db_session, product, key, actor=actor)
        await invalidate_catalog(runtime.redis)
        if old:
            await runtime.storage.remove(f"{old}/400.webp", folder=True)
        flash(request, "Cover uploaded.", "success")
        return redirect(request, request.app.route_reverse("admin:product", product_id=product_id))

    @post("/{product_id:uuid}/file", name="admin:product_file", guards=FULL, request_max_body_size=None)
    async def digital_file(
        self,
        request: Request[Any, Any, Any],
        product_id: FromPath[UUID],
        db_session: NamedDependency[AsyncSession],
        runtime: NamedDependency[Runtime],
        actor: NamedDependency[Actor],
    ) -> Template | Response[Any]:
        """The file buyers download, streamed to storage chunk by chunk with its SHA-256 taken on the way. The
        product keeps its previous file until the new one is completely written and renamed into place."""
        settings = runtime.settings
        product = await get_product(db_session, product_id)
        limit = settings.product_file_max_bytes
        too_big = f"Files are limited to {_mib(limit)}."
        announced = request.headers.get("content-length", "")
        if announced.isdigit() and int(announced) > limit + 1024 * 1024:  # refuse before reading anything
            return await self._upload_error(request, db_session, product, "file", too_big, status_code=413)
        writer: UploadWriter | None = None
        meta: dict[str, str] = {}

        def start(filename: str, content_type: str) -> None:
            nonlocal writer
            token = datetime.now(UTC).strftime("%Y%m%d%H%M%S%f")
            key = f"products/{product.id}/{token}/{_safe_name(filename)}"
            writer = runtime.storage.writer(key, max_bytes=limit, content_type=content_type[:120])
            meta.update(filename=_safe_name(filename), content_type=content_type[:120])

        def write(chunk: bytes) -> None:
            assert writer is not None
            writer.write(chunk)

        try:
            await read_upload(request, "file", start, write)
        except FileTooLargeError:
            return await self._upload_error(request, db_session, product, "file", too_big, status_code=413)
        except UploadError as exc:
            if writer is not None:
                writer.abort()
            return await self._upload_error(request, db_session, product, "file", str(exc))
        except BaseException:
            if writer is not None:
                writer.abort()
            raise
        assert writer is not None  # read_upload raises when there was no file part
        if writer.size == 0:
            writer.abort()
            return await self._upload_error(request, db_session, product, "file", "That file is empty.")
        try:
            stored = await writer.finish()
        except StorageUnavailableError as exc:
            log.error("admin.storage_unavailable", product=str(product_id), error=str(exc))
            return await self._upload_error(request, db_session, product, "file", STORAGE_DOWN, status_code=503)
        upload = UploadedFile(stored=stored, filename=meta["filename"], content_type=meta["content_type"])
        old = await set_digital_file(db_session, product, upload, actor=actor)
        if old and old != stored.key:
            await runtime.storage.remove(old, folder=old.startswith("products/"))
        log.info("admin.product_file", product=str(product_id), size=stored.size, sha256=stored.sha256)
        flash(request, f"File uploaded: {upload.filename}.", "success")
        return redirect(request, request.app.route_reverse("admin:product", product_id=product_id))

    async def _upload_error(
        self,
        request: Request[Any, Any, Any],
        db: AsyncSession,
        product: Any,
        field: str,
        message: str,
        status_code: int = 422,
    ) -> Template:
        error = FormError({field: message}, message)
        return await _form_page(request, db, product, error=error, status_code=status_code)
