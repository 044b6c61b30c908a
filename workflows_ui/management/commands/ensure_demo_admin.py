"""``manage.py ensure_demo_admin``: on a fresh database, create a demo admin and print its login.

Does nothing when any user exists (besides printing the demo login again if it is still the one
saved under var/ by an earlier run).
"""

from __future__ import annotations

import os
import secrets
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Create a demo admin user when the database has no user, and print its login."

    def handle(self, *args: Any, **options: Any) -> None:
        User = get_user_model()  # noqa: N806
        saved = settings.VAR_DIR / "demo-admin.txt"
        if not User.objects.exists():
            password = secrets.token_urlsafe(12)
            User.objects.create_superuser("admin", "", password)
            settings.VAR_DIR.mkdir(parents=True, exist_ok=True)
            # Created private: written first and narrowed after, it was readable meanwhile.
            saved.unlink(missing_ok=True)
            with os.fdopen(os.open(saved, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600), "w") as f:
                f.write(f"admin {password}\n")
            self.stdout.write(f"Created the demo admin. Log in as: admin / {password}")
            return
        if saved.exists():
            username, _, password = saved.read_text().strip().partition(" ")
            user = User.objects.filter(username=username).first()
            if user is not None and user.check_password(password):
                self.stdout.write(f"Log in as: {username} / {password}")
                return
        self.stdout.write("Users exist already: log in with yours (manage.py createsuperuser).")
