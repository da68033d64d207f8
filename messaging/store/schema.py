"""The system of record: SQLAlchemy Core tables, one ``MetaData``.

The same tables run on PostgreSQL (production, RDS) and SQLite (embedded default). The
delivery ledger is the durable truth about every targeted recipient (contract §9.5); it is
sized for millions of rows per blast: a narrow row, a composite primary key that doubles as
the expansion's natural order, and the few indexes the sender, the sweep and the progress
queries need. Schema changes go through Alembic (``migrations/``), never ``create_all``.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    false,
    text,
)
from sqlalchemy.dialects import postgresql

# The columns' lengths are the domain's (the import and the webhooks check them too).
from messaging.ports.stores import EMAIL_LEN, EXTERNAL_ID_LEN, NAME_LEN

#: Constraint names are deterministic so Alembic migrations can refer to them.
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

#: SQLite only auto-increments an ``INTEGER PRIMARY KEY``; PostgreSQL gets a bigint identity.
Id = BigInteger().with_variant(Integer(), "sqlite")

#: Custom fields of an import (migration 0009): JSONB on PostgreSQL, where a GIN index serves
#: ``audience.fields`` containment filters; JSON text on SQLite.
FieldsJson = JSON().with_variant(postgresql.JSONB(), "postgresql")


def _ts(name: str, nullable: bool = True) -> Column[object]:
    return Column(name, DateTime(timezone=True), nullable=nullable)


supporters = Table(
    "supporters",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("external_id", String(EXTERNAL_ID_LEN), nullable=False, unique=True),
    Column("first_name", String(NAME_LEN)),
    Column("last_name", String(NAME_LEN)),
    Column("phone", String(16)),  # E.164
    Column("email", String(EMAIL_LEN)),  # domain lower-cased
    Column("postal_code", String(10)),
    Column("state", String(2)),
    # Tags as ";a;b;" so one LIKE '%;tag;%' matches a whole tag on both databases.
    Column("tags", Text),
    Column("timezone", String(64)),  # IANA name, or NULL when unknown
    Column("sms_opt_in", Boolean, nullable=False, server_default=false()),
    Column("email_opt_in", Boolean, nullable=False, server_default=false()),
    # Set by the first SMS the org sends this supporter (first-contact text, contract §8).
    _ts("first_sms_at"),
    _ts("created_at", nullable=False),
    _ts("updated_at", nullable=False),
    # The import's other columns, ``{"name": "value"}`` (contract §5; migration 0009).
    Column("fields", FieldsJson),
    Index(None, "phone"),
    Index(None, "email"),
    Index(
        "ix_supporters_fields",
        "fields",
        postgresql_using="gin",
        postgresql_ops={"fields": "jsonb_path_ops"},
    ),
)

alert_topics = Table(
    "alert_topics",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("sns_topic_arn", String(256)),
    _ts("created_at", nullable=False),
    #: ``HH:MM-HH:MM``: the topic's own SMS quiet window; NULL: the fleet's ``QUIET_HOURS``.
    Column("quiet_hours", String(11)),
)

# No foreign key to alert_topics: an import may name a topic before it is provisioned; the
# import registers it and reports that it needs `rapid provision`.
subscriptions = Table(
    "subscriptions",
    metadata,
    Column("topic", String(64), primary_key=True),
    Column("supporter_id", Id, ForeignKey("supporters.id", ondelete="CASCADE"), primary_key=True),
    _ts("created_at", nullable=False),
    Index(None, "supporter_id"),
)

#: The active suppression list: one row per (channel, value) that must never be messaged.
suppressions = Table(
    "suppressions",
    metadata,
    Column("channel", String(8), primary_key=True),  # "sms" | "email"
    Column("value", String(EMAIL_LEN), primary_key=True),  # E.164 or lower-cased email
    Column("reason", String(64), nullable=False),
    Column("source", String(64), nullable=False),
    _ts("created_at", nullable=False),
)

#: Append-only audit of every suppression change: who stopped or restarted, when, and how.
suppression_events = Table(
    "suppression_events",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("channel", String(8), nullable=False),
    Column("value", String(EMAIL_LEN), nullable=False),
    Column("action", String(8), nullable=False),  # "add" | "remove"
    Column("reason", String(64), nullable=False),
    Column("source", String(64), nullable=False),
    _ts("at", nullable=False),
    Index(None, "channel", "value"),
)

blasts = Table(
    "blasts",
    metadata,
    # The alert id is the idempotency key: a second delivery of the same alert finds this row.
    Column("blast_id", String(128), primary_key=True),
    Column("topic", String(64), nullable=False),
    Column("status", String(32), nullable=False),  # 32 since 0007: awaiting_approval
    Column("priority", String(8), nullable=False),
    Column("alert", Text, nullable=False),  # the validated alert, as JSON
    Column("sns_message_id", String(128)),
    Column("dry_run", Boolean, nullable=False, server_default=false()),
    Column("is_test", Boolean, nullable=False, server_default=false()),
    _ts("send_by"),
    # Highest supporter id already written to the ledger: expansion resumes after a crash.
    Column("expansion_cursor", Id, nullable=False, server_default="0"),
    # Audience figures fixed at expansion (JSON): subscribers without consent or address, …
    Column("stats", Text),
    _ts("created_at", nullable=False),
    _ts("updated_at", nullable=False),
    _ts("expanded_at"),
    _ts("ended_at"),
    # Lifecycle (migration 0005): why a paused blast is paused, who requested and approved
    # it, and when a scheduled blast is due.
    Column("pause_reason", String(32)),
    Column("pause_detail", Text),
    Column("requested_by", Text),
    Column("approved_by", Text),
    _ts("send_at"),
    Index(None, "created_at"),
)

#: The per-recipient ledger (outbox): written before anything is sent.
deliveries = Table(
    "deliveries",
    metadata,
    Column("blast_id", String(128), ForeignKey("blasts.blast_id"), primary_key=True),
    Column("channel", String(8), primary_key=True),
    Column("supporter_id", Id, primary_key=True),
    Column("destination", String(EMAIL_LEN), nullable=False),
    Column("state", String(12), nullable=False),
    Column("sender", String(34)),  # the From number or Messaging Service used
    Column("provider_message_id", String(64)),
    Column("error_code", String(32)),
    Column("error", Text),
    Column("attempts", SmallInteger, nullable=False, server_default="0"),
    Column("segments", SmallInteger),
    _ts("deferred_until"),
    _ts("created_at", nullable=False),
    _ts("updated_at", nullable=False),
    _ts("sent_at"),
    _ts("delivered_at"),
    # Migration 0009: the recipient's first click on a tracked link, and the alert variant
    # the row got (NULL: the alert has no variants).
    _ts("clicked_at"),
    Column("variant", SmallInteger),
    # Progress counts and the re-drive sweep both ask "which rows of this blast are in state S".
    Index(None, "blast_id", "channel", "state"),
    # Status callbacks and event webhooks find their row by the provider's id.
    Index(None, "provider_message_id"),
    # Clicks of a blast counted from its clicked rows only (migration 0011).
    Index(
        "ix_deliveries_clicked",
        "blast_id",
        "channel",
        postgresql_where=text("clicked_at IS NOT NULL"),
        sqlite_where=text("clicked_at IS NOT NULL"),
    ),
    # Guarantee 1 held by the database itself: one message per (blast, channel, destination).
    # Household members who share a phone or an address get a row in state `duplicate`,
    # which is outside this partial index.
    Index(
        "ux_deliveries_destination",
        "blast_id",
        "channel",
        "destination",
        unique=True,
        postgresql_where=text("state <> 'duplicate'"),
        sqlite_where=text("state <> 'duplicate'"),
    ),
)

# --- tracked short links (migration 0011) --------------------------------------------------

#: One row per distinct URL of a blast's channel (messaging/content/links.py): a short link's code
#: names the id, so the redirect finds where it points with one primary-key read. The
#: recipient is in the code, never in a row here; the click lands on ``deliveries.clicked_at``.
links = Table(
    "links",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("blast_id", String(128), nullable=False),
    Column("channel", String(8), nullable=False),
    # SHA-256 of the URL, hex: the unique key (a URL may be longer than an index entry).
    Column("url_hash", String(64), nullable=False),
    Column("url", Text, nullable=False),
    _ts("created_at", nullable=False),
    Index("ux_links_blast_url", "blast_id", "channel", "url_hash", unique=True),
)

# --- webhooks (migration 0002) -------------------------------------------------------------

#: Every inbound SMS, keyword or not: STOP/START/HELP are acted on, anything else waits here
#: for a person. ``message_sid`` is unique, so a redelivered webhook is recorded (and acted
#: on) once. Phone columns are wider than E.164: short codes and alphanumeric senders exist.
inbound_messages = Table(
    "inbound_messages",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("from_number", String(32), nullable=False),
    Column("to_number", String(32)),
    Column("body", Text, nullable=False),
    Column("message_sid", String(64), unique=True),
    # The keyword acted on (stop, start, help), or NULL for text a person should read.
    Column("action", String(16)),
    _ts("received_at", nullable=False),
    Index(None, "received_at"),
)

#: Provider events already applied (SendGrid's ``sg_event_id``): a replayed batch is a no-op.
webhook_events = Table(
    "webhook_events",
    metadata,
    Column("provider", String(16), primary_key=True),
    Column("event_id", String(128), primary_key=True),
    _ts("received_at", nullable=False),
    # Old rows can be pruned by age; providers stop retrying after a few days.
    Index(None, "received_at"),
)

# --- early status callbacks (migration 0003) -----------------------------------------------

#: A status callback that overtook the sender: Twilio may report ``delivered`` before the
#: batch that sent the message has written its SID to the ledger. Parked here, applied by
#: the sender when it records the SID, so no delivery report is lost to the race.
early_statuses = Table(
    "early_statuses",
    metadata,
    Column("provider_message_id", String(64), primary_key=True),
    Column("state", String(12), nullable=False),  # delivered | failed
    Column("error_code", String(32)),
    Column("error", Text),
    _ts("received_at", nullable=False),
    Index(None, "received_at"),
)

# --- replies (migration 0006) --------------------------------------------------------------

#: Every inbound SMS with what it asked for (contract §12), who sent it and which blast it
#: answers (the last one sent to that phone). ``message_sid`` is unique, so a redelivered
#: webhook is recorded (and acted on) once. Supersedes ``inbound_messages``.
replies = Table(
    "replies",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("message_sid", String(64), unique=True),
    Column("from_number", String(32), nullable=False),
    Column("to_number", String(32)),
    Column("body", Text, nullable=False),
    # opt_out | opt_in | help | needs_review | other, and why (messaging/compliance).
    Column("kind", String(16), nullable=False),
    Column("reason", String(64)),
    Column("supporter_id", Id, ForeignKey("supporters.id", ondelete="SET NULL")),
    Column("blast_id", String(128)),
    _ts("received_at", nullable=False),
    # A person's decision on a needs_review reply: opt_out (keep the suppression) or
    # not_opt_out (lift it), by whom and when.
    Column("review_verdict", String(16)),
    Column("reviewed_by", String(128)),
    _ts("reviewed_at"),
    Index(None, "received_at"),
    Index(None, "blast_id", "kind"),
    Index(None, "from_number"),
)

# --- operators and the audit log (migration 0007) ------------------------------------------

#: People allowed to use the fleet (contract §11). Only a SHA-256 of each token is kept; a
#: revoked operator keeps its row (the audit log names it) with ``revoked_at`` set.
operators = Table(
    "operators",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("role", String(16), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("created_by", String(64), nullable=False),
    _ts("created_at", nullable=False),
    _ts("revoked_at"),
)

#: Append-only: on PostgreSQL a trigger refuses UPDATE, DELETE and TRUNCATE (migration 0007).
audit_log = Table(
    "audit_log",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    _ts("at", nullable=False),
    Column("actor", String(64), nullable=False),
    Column("source", String(16), nullable=False),  # cli | api | dashboard | sns | fleet
    Column("action", String(32), nullable=False),
    Column("blast_id", String(128)),
    Column("value", String(320)),  # masked
    Column("detail", Text),
    Index(None, "at"),
    Index(None, "blast_id"),
)

# --- ledger counts (migration 0010) --------------------------------------------------------

#: Ledger rows per (blast, channel, state), kept by triggers on ``deliveries`` in the very
#: transaction that writes the rows, so progress, metrics and reconcile read a few rows per
#: blast instead of counting the ledger. Deleting ledger rows (``rapid ledger prune``) does
#: not touch it: a pruned blast keeps its summary.
blast_counts = Table(
    "blast_counts",
    metadata,
    Column("blast_id", String(128), primary_key=True),
    Column("channel", String(8), primary_key=True),
    Column("state", String(12), primary_key=True),
    Column("n", BigInteger, nullable=False),
)

#: PostgreSQL only: each ledger statement appends its net change per (blast, channel, state)
#: here (append-only, so concurrent senders of one blast never wait on a shared counter row
#: or deadlock over two), and the scheduler folds them into ``blast_counts``. Readers add
#: both. SQLite (one writer at a time) updates ``blast_counts`` directly.
blast_count_deltas = Table(
    "blast_count_deltas",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("blast_id", String(128), nullable=False),
    Column("channel", String(8), nullable=False),
    Column("state", String(12), nullable=False),
    Column("n", BigInteger, nullable=False),
    Index(None, "blast_id"),
)
