-- agentvault schema, version 5 (SQLite): users are found by email ignoring case with
-- `LOWER(email) = LOWER($1)`, which this index answers (the column's NOCASE unique index cannot).

CREATE INDEX users_by_lower_email ON users (LOWER(email));
