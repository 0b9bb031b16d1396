"""DICOM TLS: SSL contexts for the listener and for export, from configured PEM files."""

from __future__ import annotations

import logging
import ssl

from dicom_node.config import Settings

log = logging.getLogger(__name__)


def server_context(settings: Settings) -> ssl.SSLContext | None:
    """The listener's context; with a CA configured, callers must present a certificate it signed."""
    if not settings.tls_cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(settings.tls_cert, settings.tls_key)
    if settings.tls_ca:
        context.load_verify_locations(settings.tls_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    else:
        log.warning(
            "DICOM TLS without DICOM_NODE_TLS_CA: traffic is encrypted but any client is accepted "
            "(no client certificate is asked for); set DICOM_NODE_TLS_CA to admit only certificates it signed"
        )
    return context


def client_context(settings: Settings) -> ssl.SSLContext | None:
    """Export's context: verify the PACS against the CA and present the node's own certificate."""
    if not settings.export_tls:
        return None
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=settings.tls_ca)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = False  # DICOM peers are configured by address; the CA pins them
    if settings.tls_cert:
        context.load_cert_chain(settings.tls_cert, settings.tls_key)
    return context
