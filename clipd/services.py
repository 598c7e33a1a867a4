"""What ``clipd run`` adds to the core daemon: background services and API routes.

Each part registers here, so the daemon stays a wiring of parts it does not know.
"""

from __future__ import annotations

from aiohttp import web

from clipd.config import Config
from clipd.daemon import Service

__all__ = ["routes_for", "services_for"]


def services_for(config: Config) -> list[Service]:
    """Long-running tasks for this config (retention, scrub, backup)."""
    services: list[Service] = []
    return services


def routes_for(config: Config) -> list[web.RouteDef]:
    """HTTP routes beyond health and metrics (the jobs API)."""
    routes: list[web.RouteDef] = []
    return routes
