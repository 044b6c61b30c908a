"""``python manage.py forgetengine NAME``: delete an engine that is no longer in
``CONSOLE_ENGINES`` from the console's database, with everything indexed from it."""

from __future__ import annotations

import sys
import time
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from engine_bridge import retention
from engine_bridge.locks import EngineLock, EngineTaken, app_ids_in_order, check_holder
from workflows_ui.models import Engine, Instance

#: Seconds between two lines of progress.
PROGRESS_EVERY = 5.0


class Command(BaseCommand):
    help = (
        "Delete an engine no longer in CONSOLE_ENGINES from the console, with its instances, "
        "runs and history (a batch at a time: stopped, it goes on where it was when run again)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="the engine's name, as on the engines page")
        parser.add_argument("--yes", action="store_true", help="delete without asking")

    def handle(self, *args: Any, **options: Any) -> None:
        name = options["name"]
        if name in {c.name for c in settings.CONSOLE_ENGINES}:
            raise CommandError(
                f"engine {name!r} is in CONSOLE_ENGINES: take it out (and restart runindexer) "
                "first, or the indexer reads it all again"
            )
        engine = Engine.objects.filter(name=name).first()
        if engine is None:
            raise CommandError(f"no engine {name!r} in the console's database")
        if engine.configured:
            # This shell's CONSOLE_ENGINES may not be the indexer's: the row says whether a
            # runindexer has it (or had it when the last one stopped; a runindexer running with
            # other engines says within seconds that no process has it any more).
            raise CommandError(
                f"engine {name!r} is in the CONSOLE_ENGINES of a runindexer (running, or the "
                "last one that ran): restart runindexer without it first"
            )
        lock = EngineLock(engine.pk, name)
        try:
            lock.acquire()
        except EngineTaken:
            raise CommandError(
                f"engine {name!r} is being indexed by a runindexer started with it in "
                "CONSOLE_ENGINES: restart that one without it first"
            ) from None
        try:
            total = Instance.objects.filter(engine=engine).count()
            if not options["yes"]:
                self._confirm(name, total)
            deleted = self._delete(engine, lock.token, total)
            lock.remove_file()  # else one is left behind for each engine ever forgotten
        finally:
            lock.release()
        self.stdout.write(f"engine {name!r} deleted ({deleted:,} instances deleted by this run)")

    def _confirm(self, name: str, total: int) -> None:
        if not sys.stdin.isatty():
            raise CommandError("nothing deleted: confirm with --yes when not run from a terminal")
        try:
            answer = input(
                f"Delete engine {name!r} and the {total:,} instances indexed from it, with their "
                "runs and history? Type its name to confirm: "
            )
        except (EOFError, KeyboardInterrupt):  # Ctrl-D or Ctrl-C at the prompt: a no
            raise CommandError("nothing deleted") from None
        if answer.strip() != name:
            raise CommandError("nothing deleted")

    def _delete(self, engine: Engine, token: str, total: int) -> int:
        # Other engines' indexers link children to an engine by its app id: no new link to it.
        Engine.objects.filter(pk=engine.pk).update(app_id="")
        deleted = 0
        said_at = time.monotonic()
        while n := retention.forget_engine_batch(engine.pk, token):
            deleted += n
            if time.monotonic() - said_at >= PROGRESS_EVERY:
                self.stdout.write(f"{deleted:,} of {total:,} instances deleted")
                said_at = time.monotonic()
        # Children on other engines keep their parent's app id and id, not the link.
        while retention.unlink_children_batch(engine.pk, token):
            pass
        with transaction.atomic():
            # An indexer that found this engine by its app id before it went may still link a
            # child to it: taken as a learner of app ids, this waits for its commit, and those
            # after it find no engine of that app.
            app_ids_in_order(learning=True)
            check_holder(engine.pk, token)
            # None is left, unless an indexer linked one before it saw the app id go.
            retention.unlink_children(Instance.objects.filter(parent_engine=engine))
            Engine.objects.filter(pk=engine.pk).delete()  # its counts, schedule, change log
        return deleted
