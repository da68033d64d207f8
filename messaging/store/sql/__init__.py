"""The SQLAlchemy Core backend of the store ports, shared by PostgreSQL and SQLite.

What differs between the two databases is a method of one :class:`~.dialect.SqlDialect`
(:mod:`.postgres`, :mod:`.sqlite`), picked once per engine by :func:`~.dialect.dialect_for`.
"""
