"""The HTTP gateway: commands in, results out, projection rows and streams (see ``app``)."""

from foldline.gateway.app import create_app
from foldline.gateway.core import Gateway
from foldline.gateway.errors import (
    BadRequest,
    ClientClosed,
    GatewayTimeout,
    HttpError,
    NotFound,
    PayloadTooLarge,
    RequestTimeout,
    Unauthorized,
    Unavailable,
    Unfoldable,
    UnsupportedMediaType,
)
from foldline.gateway.server import GatewayServer, build_gateway, serve
from foldline.gateway.views import ViewCatalog, ViewService

__all__ = [
    "BadRequest",
    "ClientClosed",
    "Gateway",
    "GatewayServer",
    "GatewayTimeout",
    "HttpError",
    "NotFound",
    "PayloadTooLarge",
    "RequestTimeout",
    "Unauthorized",
    "Unavailable",
    "Unfoldable",
    "UnsupportedMediaType",
    "ViewCatalog",
    "ViewService",
    "build_gateway",
    "create_app",
    "serve",
]
