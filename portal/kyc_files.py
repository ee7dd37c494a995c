"""Serving a stored KYC document to someone allowed to see it (the views check who).

The file is decrypted (it is stored encrypted) and goes out with the content type sniffed at
upload, `nosniff`, a CSP that forbids any script or sub-resource (`sandbox`), no caching, and as an
attachment when it is a PDF; images are inline so that the review page can show them. Nothing
uploaded is ever run or rendered as HTML.
"""

from __future__ import annotations

import io

from flask import abort, current_app, send_file

from onboarding import documents
from onboarding.models import KycDocument


def send_document(document: KycDocument | None):
    if document is None:
        abort(404)
    content = documents.read(current_app.config["UPLOAD_DIR"], document)
    if content is None:
        abort(404)
    stem = document.original_name.rsplit(".", 1)[0] or "document"
    extension = documents.EXTENSIONS[document.content_type]
    response = send_file(
        io.BytesIO(content),
        mimetype=document.content_type,
        as_attachment=not document.is_image,
        download_name=f"{stem}.{extension}",
        max_age=0,
        etag=False,
        conditional=False,
    )
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Content-Security-Policy"] = "default-src 'none'; img-src 'self'; sandbox"
    response.headers["Cache-Control"] = "private, no-store"
    response.headers["Cross-Origin-Resource-Policy"] = "same-origin"
    return response
