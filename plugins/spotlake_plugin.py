"""spotlake's Airflow plugin: the operations page in Airflow's menu, and the tasks' extra links.

The only module of the plugins folder that Airflow's plugin manager imports (``.airflowignore``
lists the others). The page is :mod:`ui.app`, mounted on the API server at ``/spotlake`` and shown
inside the Airflow UI (menu *Browse → spotlake operations*), behind Airflow's own login.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from operators.links import SPOTLAKE_OPERATOR_LINKS
from ui.app import airflow_app


class SpotlakePlugin(AirflowPlugin):
    name = "spotlake"
    operator_extra_links = [*SPOTLAKE_OPERATOR_LINKS]
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
