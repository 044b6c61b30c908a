"""HTML routes (the REST API is included from console.urls under /api/).

Instance ids are one path segment, whatever they hold (see ``converters.PageInstanceId``). Runs
are addressed by their ordinal, events by their position.
"""

from django.urls import path

from workflows_ui import (
    converters,  # noqa: F401 - registers the path converters
    views,
)

_INST = "instances/<engine_name:engine>/<page_instance_id:instance_id>/"
_RUN = _INST + "runs/<int:ordinal>/"

urlpatterns = [
    path("", views.home, name="home"),
    path("instances/", views.instance_list, name="instance-list"),
    path("instances/names/", views.workflow_names, name="workflow-names"),
    path(_RUN + "events/<int:position>/", views.instance_detail, name="event-detail"),
    path(_RUN + "history/", views.run_history, name="run-history"),
    path(_RUN + "history.json", views.history_download, name="run-history-download"),
    path(_RUN, views.instance_detail, name="run-detail"),
    path(_INST + "payload/<str:field>/", views.payload_view, name="instance-payload"),
    path(_INST, views.instance_detail, name="instance-detail"),
]
