from django.urls import path

from workflows_ui import views

urlpatterns = [
    path("", views.home, name="home"),
]
