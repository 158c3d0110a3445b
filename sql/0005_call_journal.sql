-- The call journal: every model call and tool call of a node instance, recorded as it completes,
-- by run, idempotency key and call index, so a retry or a resume answers it instead of calling again.

CREATE TABLE fibergraph.call_journal (
  run_id        text     NOT NULL REFERENCES fibergraph.runs (run_id) ON DELETE CASCADE,
  key           text     NOT NULL,
  idx           integer  NOT NULL,
  step          integer  NOT NULL,
  kind          text     NOT NULL CHECK (kind IN ('model', 'tool')),
  name          text     NOT NULL,
  request_hash  text     NOT NULL,
  response      jsonb    NOT NULL,
  usage         jsonb,
  at            bigint   NOT NULL,
  PRIMARY KEY (run_id, key, idx)
);
