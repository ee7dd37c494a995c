"""KYC documents: uploaded, checked by their content, stored outside the web root (use cases).

- Type: sniffed from the bytes (`filetype`), never from the file name or the browser's content
  type. PDF must start with a `%PDF-x.y` header and end with `%%EOF`; PNG and JPEG must open and
  verify in Pillow as the format sniffed, within a pixel limit (no decompression bombs).
- Storage: `<upload dir>/kyc/<tenant id>/<merchant id>/<32 random hex>.<pdf|png|jpg>`. Every part
  of the path is ours; the uploaded name is kept only as a display string, cleaned of path parts
  and control characters.
- Changes (upload, delete) only while the onboarding is `draft` or `changes_requested`.
- Encrypted at rest (`core.crypto`, the keys of every stored secret): `read` decrypts;
  `reencrypt_files`, part of `flask keys rotate`, re-encrypts them under the newest key (and
  encrypts a file written before documents were encrypted).
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import secrets
import unicodedata
import uuid
import warnings
from pathlib import Path

import filetype
import sqlalchemy as sa
from cryptography.fernet import InvalidToken
from PIL import Image, UnidentifiedImageError

from core import crypto
from core.db import db
from core.i18n import gettext, lazy_gettext
from onboarding.models import DOCUMENT_KINDS, KycDocument
from onboarding.profile import locked_merchant, require_editable
from tenants import audit
from tenants.errors import InvalidInput

EXTENSIONS = {"application/pdf": "pdf", "image/png": "png", "image/jpeg": "jpg"}
PIL_FORMATS = {"image/png": "PNG", "image/jpeg": "JPEG"}
MAX_PIXELS = 40_000_000  # a 40-megapixel scan; more is refused before it is decoded
MAX_DOCUMENTS = 20  # per merchant
NAME_MAX = 120
STORAGE_NAME = re.compile(r"^[0-9a-f]{32}\.(pdf|png|jpg)$")
PDF_HEADER = re.compile(rb"^%PDF-[12]\.[0-9]")
NOT_ACCEPTED = lazy_gettext("Upload a PDF, PNG or JPEG file: this file is none of them (whatever its name says).")


def display_name(filename: str | None) -> str:
    """The uploaded file's name for display: its last path part, without control characters."""
    text = (filename or "").replace("\\", "/").rsplit("/", 1)[-1]
    text = "".join(ch for ch in text if unicodedata.category(ch)[0] != "C").strip().lstrip(".")
    return text[:NAME_MAX] or "document"


def sniff(data: bytes) -> str:
    """The content type of `data` (application/pdf, image/png, image/jpeg), else InvalidInput."""
    kind = filetype.guess(data[:8192])
    mime = kind.mime if kind is not None else None
    if mime == "application/pdf":
        if not PDF_HEADER.match(data) or b"%%EOF" not in data[-1024:]:
            raise InvalidInput(gettext("This PDF is damaged or incomplete: upload the whole file."), "file")
        return mime
    if mime in PIL_FORMATS:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(io.BytesIO(data)) as probe:
                    image_format, (width, height) = probe.format, probe.size
                    if image_format == PIL_FORMATS[mime] and width * height <= MAX_PIXELS:
                        probe.verify()
        except (
            UnidentifiedImageError,
            OSError,
            SyntaxError,
            ValueError,
            Image.DecompressionBombError,
            Image.DecompressionBombWarning,
        ) as exc:
            raise InvalidInput(gettext("This image is damaged and cannot be read: upload it again."), "file") from exc
        if image_format != PIL_FORMATS[mime]:
            raise InvalidInput(str(NOT_ACCEPTED), "file")
        if width * height > MAX_PIXELS:
            raise InvalidInput(gettext("This image has too many pixels: scan it at a lower resolution."), "file")
        return mime
    raise InvalidInput(str(NOT_ACCEPTED), "file")


def folder(upload_dir: Path, tenant_id: uuid.UUID, merchant_id: uuid.UUID) -> Path:
    return Path(upload_dir) / "kyc" / str(uuid.UUID(str(tenant_id))) / str(uuid.UUID(str(merchant_id)))


def path_of(upload_dir: Path, document: KycDocument) -> Path | None:
    """Where the document's file is; None if its stored name is not one of ours or it is gone."""
    if not STORAGE_NAME.match(document.storage_name):
        return None
    path = folder(upload_dir, document.tenant_id, document.merchant_id) / document.storage_name
    return path if path.is_file() else None


def read(upload_dir: Path, document: KycDocument) -> bytes | None:
    """The document's content (decrypted); None if its file is gone."""
    path = path_of(upload_dir, document)
    return None if path is None else crypto.decrypt_bytes(path.read_bytes())


def _write_atomically(path: Path, content: bytes) -> None:
    temporary = path.with_name(f".{path.name}.rotating")
    with open(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as out:
        out.write(content)
    os.replace(temporary, path)


def reencrypt_files(session, upload_dir: Path, *, batch_size: int = 500, progress=None) -> crypto.RotationReport:
    """Every document's file under the newest key (see `core.crypto.rotate`): files are never changed
    once written, so each is rewritten whole under a temporary name and renamed over the old one.
    The caller gives a session in platform scope."""
    report = crypto.RotationReport(crypto.EncryptedColumn("kyc_documents", "file"), label="kyc_documents (files)")
    last = None
    while True:
        query = sa.select(KycDocument).order_by(KycDocument.tenant_id, KycDocument.id).limit(batch_size)
        if last is not None:
            query = query.where(sa.tuple_(KycDocument.tenant_id, KycDocument.id) > sa.tuple_(*last))
        rows = session.execute(query).scalars().all()
        session.rollback()  # only the files change; no transaction stays open between batches
        if not rows:
            return report
        for document in rows:
            path = path_of(upload_dir, document)
            if path is None:
                continue
            report.rows += 1
            try:
                fresh = crypto.rotate_bytes(path.read_bytes())
            except InvalidToken:
                report.failed.append(f"tenant_id={document.tenant_id}, id={document.id}")
                continue
            if fresh is None:
                report.current += 1
            else:
                _write_atomically(path, fresh)
                report.rotated += 1
        last = (rows[-1].tenant_id, rows[-1].id)
        if progress is not None:
            progress(report)


def documents_of(tenant_id: uuid.UUID, merchant_id: uuid.UUID) -> list[KycDocument]:
    return list(
        db.session.execute(
            sa.select(KycDocument)
            .where(KycDocument.tenant_id == tenant_id, KycDocument.merchant_id == merchant_id)
            .order_by(KycDocument.created_at, KycDocument.id)
        )
        .scalars()
        .all()
    )


def get(tenant_id: uuid.UUID, merchant_id: uuid.UUID, document_id: uuid.UUID) -> KycDocument | None:
    """A document of that merchant, or None (another merchant's id finds nothing)."""
    return db.session.execute(
        sa.select(KycDocument).where(
            KycDocument.tenant_id == tenant_id,
            KycDocument.merchant_id == merchant_id,
            KycDocument.id == document_id,
        )
    ).scalar_one_or_none()


def upload(
    tenant_id: uuid.UUID,
    merchant_id: uuid.UUID,
    kind: str,
    filename: str | None,
    data: bytes,
    *,
    upload_dir: Path,
    max_bytes: int,
    actor: audit.Actor,
) -> KycDocument:
    """Check and store one document. Raises InvalidInput naming the field. Commits."""
    if kind not in DOCUMENT_KINDS:
        raise InvalidInput(gettext("Choose what the document is."), "kind")
    if not data:
        raise InvalidInput(gettext("The file is empty: choose the document's file."), "file")
    if len(data) > max_bytes:
        raise InvalidInput(gettext("The file is larger than %(size)s MB.", size=max_bytes // (1024 * 1024)), "file")
    content_type = sniff(data)
    merchant = locked_merchant(tenant_id, merchant_id)
    require_editable(merchant)
    count = db.session.scalar(
        sa.select(sa.func.count())
        .select_from(KycDocument)
        .where(KycDocument.tenant_id == tenant_id, KycDocument.merchant_id == merchant_id)
    )
    if count >= MAX_DOCUMENTS:
        db.session.rollback()
        raise InvalidInput(
            gettext("At most %(limit)s documents: delete one you no longer need first.", limit=MAX_DOCUMENTS),
            "file",
        )
    target = folder(upload_dir, tenant_id, merchant_id)
    target.mkdir(parents=True, exist_ok=True)
    storage_name = f"{secrets.token_hex(16)}.{EXTENSIONS[content_type]}"
    path = target / storage_name
    temporary = target / f".{storage_name}.part"
    # Written before the row, removed again if the row is not committed; never executable.
    with open(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as out:
        out.write(crypto.encrypt_bytes(data))  # identity documents: encrypted at rest, like every secret
    os.replace(temporary, path)
    try:
        document = KycDocument(
            tenant_id=tenant_id,
            id=uuid.uuid4(),
            merchant_id=merchant_id,
            kind=kind,
            storage_name=storage_name,
            original_name=display_name(filename),
            content_type=content_type,
            size=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            uploaded_by=actor.id if actor.kind == "user" else None,
        )
        db.session.add(document)
        db.session.flush()
        audit.record(
            tenant_id,
            actor,
            "merchant.kyc_document_uploaded",
            "merchant",
            merchant_id,
            audit.created(document=str(document.id), kind=kind, name=document.original_name, type=content_type),
        )
        db.session.commit()
    except BaseException:
        db.session.rollback()
        path.unlink(missing_ok=True)
        raise
    return document


def delete(
    tenant_id: uuid.UUID, merchant_id: uuid.UUID, document_id: uuid.UUID, *, upload_dir: Path, actor: audit.Actor
) -> KycDocument:
    """Delete a document (row and file) while the application may change. Commits."""
    merchant = locked_merchant(tenant_id, merchant_id)
    require_editable(merchant)
    document = get(tenant_id, merchant_id, document_id)
    if document is None:
        db.session.rollback()
        raise InvalidInput(gettext("That document does not exist."))
    path = path_of(upload_dir, document)
    db.session.delete(document)
    audit.record(
        tenant_id,
        actor,
        "merchant.kyc_document_deleted",
        "merchant",
        merchant_id,
        {"document": {"before": str(document.id), "after": None}, "kind": {"before": document.kind, "after": None}},
    )
    db.session.commit()
    if path is not None:
        path.unlink(missing_ok=True)
    return document
