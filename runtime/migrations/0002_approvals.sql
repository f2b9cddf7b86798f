-- Pending approvals shared by replicas (issue 16): asked on one, listed and
-- answered through any replica's approvals endpoint, delivered to the
-- waiting invocation (LISTEN/NOTIFY on `warden_approvals`, and a poll),
-- each answer used once: a request's digest is its key, an answer moves it
-- from `pending` to `answered` once, and the waiting replica takes it from
-- `answered` to `used` once.

CREATE TABLE warden_approvals (
    digest      text PRIMARY KEY,
    -- The request as asked (ApprovalRequest's JSON); escaped when shown.
    request     text NOT NULL,
    replica     text NOT NULL,
    requested   timestamptz NOT NULL DEFAULT now(),
    expires     timestamptz NOT NULL,
    state       text NOT NULL DEFAULT 'pending'
                CHECK (state IN ('pending', 'answered', 'used')),
    approved    boolean,
    answered_by text,
    answered    timestamptz
);

CREATE INDEX warden_approvals_pending ON warden_approvals (requested)
    WHERE state = 'pending';
