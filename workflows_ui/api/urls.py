"""REST API routes. Every view answers 401/403 itself (DRF), so the login middleware lets them
through; ids are url-encoded by clients and may contain ':' (child workflows)."""

from django.contrib.auth.decorators import login_not_required
from django.urls import path
from drf_spectacular.views import SpectacularAPIView

urlpatterns = [
    path("schema/", login_not_required(SpectacularAPIView.as_view()), name="api-schema"),
]
