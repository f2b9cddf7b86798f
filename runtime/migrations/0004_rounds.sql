-- Input-required approval round trips across replicas (issue 16): a
-- 2026-07-28 client asked to approve gets a `requestState` and answers by
-- retrying the call with it, through any replica. The replica running the
-- call (`owner`) parks it here; the replica the retry reaches records the
-- answer (`parked` to `answered`, once), the owner takes it up
-- (`answered` to `running`), runs the call on and writes its answer
-- (`done`, `response`), which the answering replica takes (deleting the
-- row) and returns to the client. A retry that reaches the owner itself
-- takes the round by deleting it, and an answer the owner never took up is
-- withdrawn by deleting it, so an answer counts once, or not at all,
-- whichever replica it reaches.
--
-- `state` is the SHA-256 of the requestState: the handle itself, which
-- answers the call, is not stored; a further round's state in `response`
-- is sealed with the one before it.

CREATE TABLE warden_rounds (
    state       text PRIMARY KEY,
    owner       text NOT NULL,
    tool        text NOT NULL,
    status      text NOT NULL DEFAULT 'parked'
                CHECK (status IN ('parked', 'answered', 'running', 'done')),
    approved    boolean,
    answered_by text,
    response    text,
    parked      timestamptz NOT NULL DEFAULT now(),
    moved       timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX warden_rounds_answered ON warden_rounds (owner) WHERE status = 'answered';
