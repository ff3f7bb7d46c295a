"""The command handler: partition tasks that decide commands, and the exactly-once engine around them."""

from foldline.handler.engine import CommandHandler
from foldline.handler.wiring import build_command_handler

__all__ = ["CommandHandler", "build_command_handler"]
