-- Task histories shared by replicas (issue 16): what a task has done so far
-- (secrets revealed, hosts contacted, files written, targets deployed), the
-- runtime policy's `context.task`, whichever replica its calls land on.
-- `task` is the task's key: its id, after its agent's issuer and a newline
-- when an agent authenticated.

CREATE TABLE warden_task_history (
    task  text NOT NULL,
    kind  text NOT NULL CHECK (kind IN
          ('secrets_revealed', 'hosts_contacted', 'files_written', 'targets_deployed')),
    item  text NOT NULL,
    noted timestamptz NOT NULL DEFAULT now()
);

-- Unique by the item's digest: an item (a path, up to 8 KiB) may be longer
-- than an index entry can be, and a failed insert must never be what keeps
-- a revealed secret out of the history.
CREATE UNIQUE INDEX warden_task_history_item
    ON warden_task_history (task, kind, md5(item));
