"""Launchers: inline (this process) and local (worker processes), behind one interface."""

from .base import Launcher, get_launcher

__all__ = ["Launcher", "get_launcher"]
