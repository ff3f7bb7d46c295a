"""The HTTP gateway: commands in, results out, projection rows and streams (see ``app``)."""

from foldline.gateway.app import create_app
from foldline.gateway.core import Gateway
from foldline.gateway.errors import (
    BadRequest,
    GatewayTimeout,
    HttpError,
    NotFound,
    PayloadTooLarge,
    Unauthorized,
    Unavailable,
)
from foldline.gateway.server import GatewayServer, build_gateway, serve
from foldline.gateway.views import ViewCatalog, ViewService

__all__ = [
    "BadRequest",
    "Gateway",
    "GatewayServer",
    "GatewayTimeout",
    "HttpError",
    "NotFound",
    "PayloadTooLarge",
    "Unauthorized",
    "Unavailable",
    "ViewCatalog",
    "ViewService",
    "build_gateway",
    "create_app",
    "serve",
]
