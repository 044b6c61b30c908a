import pytest
from django.contrib.auth.models import User

pytestmark = pytest.mark.django_db


def test_it_redirects_anonymous_visitors_to_login(client):
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"].startswith("/login/")


def test_login_page_renders(client):
    response = client.get("/login/")
    assert response.status_code == 200
    assert b"Log in" in response.content


def test_a_user_logs_in_and_sees_engines(client):
    User.objects.create_user("alice", password="pw-123456789")
    response = client.post("/login/", {"username": "alice", "password": "pw-123456789"})
    assert response.status_code == 302
    response = client.get("/")
    assert response.status_code == 200
    assert b"No engine has been indexed yet" in response.content


def test_admin_needs_login(client):
    assert client.get("/admin/").status_code == 302
