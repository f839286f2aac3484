"""Django's database sessions, with the read every request and socket makes built once.

Each chat socket reads its session when it opens, on the one database thread on
SQLite, and a hundred tabs opening together queue there. Building the lookup
through the ORM took longer than running it; here it is chat.rows's statement,
built once. Everything else (decoding, saving, expiry, cycling keys) is Django's.
"""

from django.contrib.sessions.backends import db
from django.utils import timezone

from chat import rows


class SessionStore(db.SessionStore):
    def _get_session_from_db(self):
        """The session's row if it exists and has not expired (None, and no key, if not),
        as Django's own does."""
        now = rows.db_value(self.model, "expire_date", timezone.now())
        found = rows.one(
            self.model, "session_key = %s AND expire_date > %s", [self.session_key, now]
        )
        if found is None:
            self._session_key = None
        return found
