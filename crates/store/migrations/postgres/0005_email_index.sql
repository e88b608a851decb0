-- agentvault schema, version 5 (PostgreSQL): users are found by email ignoring case with
-- `LOWER(email) = LOWER($1)`, which this index answers; it also keeps two accounts from sharing
-- an email that differs only in case (SQLite's `COLLATE NOCASE` unique column does that there).

CREATE UNIQUE INDEX users_by_lower_email ON users (LOWER(email));
