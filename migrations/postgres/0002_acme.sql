-- One ACME account per CA directory. `credentials` is the account's key and URL as JSON,
-- encrypted by the acme crate before it gets here: the store never sees it in the clear.
CREATE TABLE acme_accounts (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    directory_url TEXT    NOT NULL UNIQUE,
    credentials   TEXT    NOT NULL,
    created_at    BIGINT  NOT NULL,
    updated_at    BIGINT  NOT NULL
);

-- One row per managed certificate name (`chat.example.com` or `*.example.com`). A row can exist
-- before its first certificate (a failed first order records its error here), so the
-- certificate columns are nullable. `private_key` is encrypted by the acme crate.
-- `next_attempt` is when the manager acts next: the renewal time after a success, the retry
-- time after a failure.
CREATE TABLE certificates (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name          TEXT    NOT NULL UNIQUE,
    chain_pem     TEXT,
    private_key   TEXT,
    not_before    BIGINT,
    not_after     BIGINT,
    issuer        TEXT,
    challenge     TEXT,
    last_error    TEXT,
    last_attempt  BIGINT,
    next_attempt  BIGINT,
    updated_at    BIGINT  NOT NULL
);
