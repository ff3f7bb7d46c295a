"""The HTTP gateway: commands in, results out, projection rows and streams (see ``app``)."""

from foldline.gateway.app import create_app
from foldline.gateway.core import Gateway
from foldline.gateway.server import GatewayServer, build_gateway, serve

__all__ = ["Gateway", "GatewayServer", "build_gateway", "create_app", "serve"]
