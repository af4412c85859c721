"""spotlake's Airflow plugin: the operations page in Airflow's menu, the tasks' extra links, and the
priority of a cluster pool's tasks (operators/priority.py).

The only module of the plugins folder that Airflow's plugin manager imports (``.airflowignore``
lists the others). The page is :mod:`ui.app`, mounted on the API server at ``/spotlake`` and shown
inside the Airflow UI (menu *Browse → spotlake operations*), behind Airflow's own login.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from operators.links import SPOTLAKE_OPERATOR_LINKS
from operators.priority import PoolTaskPriority
from ui.app import airflow_app


class SpotlakePlugin(AirflowPlugin):
    name = "spotlake"
    operator_extra_links = [*SPOTLAKE_OPERATOR_LINKS]
    priority_weight_strategies = [PoolTaskPriority]
    fastapi_apps = [{"app": airflow_app(), "url_prefix": "/spotlake", "name": "spotlake operations"}]
    external_views = [
        {
            "name": "spotlake operations",
            "href": "spotlake/",
            "destination": "nav",
            "category": "browse",
            "url_route": "spotlake",
        }
    ]
