-- The audit trail in PostgreSQL (issue 16): one hash chain per writer.
--
-- Each `warden serve --state` process appends to a chain of its own, named
-- when it starts; its lines are byte for byte the lines of a file trail
-- (docs/AUDIT-FORMAT.md), so a chain verifies and exports exactly as a
-- file does. The other columns are copies for filtering: verification
-- reads `line` alone.

CREATE TABLE warden_chains (
    chain   text PRIMARY KEY,
    -- Who wrote it: the replica's name (host name or --replica).
    replica text NOT NULL,
    started timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE warden_audit (
    chain      text NOT NULL REFERENCES warden_chains (chain),
    seq        bigint NOT NULL CHECK (seq >= 0),
    line       text NOT NULL,
    ts         timestamptz NOT NULL,
    event      text NOT NULL,
    invocation text NOT NULL,
    task       text NOT NULL,
    tool       text NOT NULL,
    PRIMARY KEY (chain, seq)
);

CREATE INDEX warden_audit_invocation ON warden_audit (invocation);
CREATE INDEX warden_audit_task ON warden_audit (task);
CREATE INDEX warden_audit_ts ON warden_audit (ts);

-- Append-only for every role that is not the table's owner or a superuser
-- with triggers disabled: editing a record is refused here, and caught by
-- verification anyway (the chain and the signed checkpoints).
CREATE FUNCTION warden_audit_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'warden_audit is append-only (% refused)', TG_OP;
END;
$$;

CREATE TRIGGER warden_audit_append_only
    BEFORE UPDATE OR DELETE OR TRUNCATE ON warden_audit
    FOR EACH STATEMENT EXECUTE FUNCTION warden_audit_append_only();

-- The public keys that sign checkpoints and identity tokens, as each
-- replica publishes them (JWK).
CREATE TABLE warden_keys (
    kid       text PRIMARY KEY,
    jwk       text NOT NULL,
    published timestamptz NOT NULL DEFAULT now()
);
