"""The join link as a QR code, drawn on the server as SVG by segno (a well-kept, pure-Python
QR encoder with no dependencies; the page loads nothing from another host)."""

from __future__ import annotations

import io

import segno


def qr_svg(url: str) -> str:
    """An inline ``<svg>`` of ``url`` as a QR code (error correction M, dark on light)."""
    code = segno.make(url, error="m", micro=False)
    out = io.BytesIO()
    code.save(
        out,
        kind="svg",
        scale=1,
        border=2,
        xmldecl=False,
        svgns=True,
        svgclass="qr",
        lineclass=None,
        omitsize=True,
        dark="#000",
        light="#fff",
        title="QR code of the join link",
    )
    return out.getvalue().decode()
