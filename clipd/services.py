"""What ``clipd run`` adds to the core daemon: background services and API routes.

Each part registers here, so the daemon stays a wiring of parts it does not know.
"""

from __future__ import annotations

from aiohttp import web

from clipd.config import Config
from clipd.daemon import CatalogFactory, Service

__all__ = ["catalog_for", "routes_for", "services_for"]


def services_for(config: Config) -> list[Service]:
    """Long-running tasks for this config (retention, scrub, backup)."""
    from clipd.downloads_log import download_flusher
    from clipd.looplag import loop_lag_service

    services: list[Service] = [download_flusher, loop_lag_service]
    if config.retention.enabled and (config.storage.backend != "s3" or config.s3.retention_leader):
        from clipd.cleanup import retention_service

        services.append(retention_service)
    if config.scrub.enabled:
        from clipd.scrub import scrub_service

        services.append(scrub_service)
    if config.backup.s3_bucket:
        from clipd.backup import backup_service

        services.append(backup_service)
    return services


def catalog_for(config: Config) -> CatalogFactory | None:
    """What keeps the index current when the clips are not a local tree (s3 mode)."""
    if config.storage.backend != "s3":
        return None
    from clipd.s3index import catalog_factory

    return catalog_factory


def routes_for(config: Config) -> list[web.RouteDef]:
    """HTTP routes beyond health and metrics (the jobs API)."""
    from clipd.jobs import routes as job_routes

    routes: list[web.RouteDef] = [*job_routes()]
    return routes
