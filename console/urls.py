from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, HttpResponse, HttpResponsePermanentRedirect
from django.templatetags.static import static
from django.urls import include, path

from console.signin import AdminSignInForm, SignInForm

admin.site.login_form = AdminSignInForm


@login_not_required
def favicon(request: HttpRequest) -> HttpResponse:
    # The static URL as of this request (it carries the console's path prefix, if any).
    return HttpResponsePermanentRedirect(static("favicon.svg"))


urlpatterns = [
    path("login/", auth_views.LoginView.as_view(authentication_form=SignInForm), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("api/", include("workflows_ui.api.urls")),
    # Browsers ask for it on pages that name no icon (the API's JSON): not a 404 each time.
    path("favicon.ico", favicon),
    path("", include("workflows_ui.urls")),
]

# Paths under /api/ that match no route answer JSON, as the API's own 404s do; so do its 400s
# and 500s that Django answers itself.
handler400 = "workflows_ui.api.views.bad_request"
handler404 = "workflows_ui.api.views.not_found"
handler500 = "workflows_ui.api.views.server_error"
