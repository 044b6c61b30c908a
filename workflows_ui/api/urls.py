"""REST API routes. Every view answers 401/403 itself (DRF: session or token auth), so the login
middleware lets them through. Instance ids are url-encoded by clients and may contain ':' (child
workflows), '/' or a newline: the id is the rest of the path, the more specific routes come
first."""

from django.contrib.auth.decorators import login_not_required
from django.urls import path

from workflows_ui import converters  # noqa: F401 - registers the path converters
from workflows_ui.api import views

urlpatterns = [
    path("", login_not_required(views.ApiRoot.as_view()), name="api-root"),
    path("schema/", login_not_required(views.SchemaView.as_view()), name="api-schema"),
    path("engines/", login_not_required(views.EngineList.as_view()), name="api-engines"),
    path("instances/", login_not_required(views.InstanceList.as_view()), name="api-instances"),
    path(
        "instances/<engine_name:engine>/<api_instance_id:instance_id>/runs/",
        login_not_required(views.RunList.as_view()),
        name="api-instance-runs",
    ),
    path(
        "instances/<engine_name:engine>/<api_instance_id:instance_id>/history/",
        login_not_required(views.HistoryList.as_view()),
        name="api-instance-history",
    ),
    path(
        "instances/<engine_name:engine>/<api_instance_id:instance_id>/",
        login_not_required(views.InstanceDetail.as_view()),
        name="api-instance",
    ),
]
