-- Approval rows are deleted an hour after they expire, whatever their
-- state (PgApprover's sweep): the audit trail keeps who asked and who
-- answered. Kept forever, every request ever asked stayed, and an agent
-- whose calls ask for approval grew the table by calling.

CREATE INDEX warden_approvals_expires ON warden_approvals (expires);
