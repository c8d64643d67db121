"""Memory's web UI at ``/ui/``: the leaderboard, each experiment's page, the lineage tree and the live event feed."""

from services.memory.ui.routes import PREFIX, RecentEvents, create_ui_router

__all__ = ["PREFIX", "RecentEvents", "create_ui_router"]
