-- Runs, their event logs and checkpoints: written together by one fenced step commit.
-- Instants are epoch milliseconds (bigint), as the runtime's Clock gives them.

CREATE TABLE fibergraph.runs (
  run_id              text        PRIMARY KEY,
  tenant              text        NOT NULL,
  graph_id            text        NOT NULL,
  graph_version       text        NOT NULL,
  graph_hash          text        NOT NULL,
  status              text        NOT NULL
    CHECK (status IN ('pending', 'running', 'waiting', 'completed', 'failed', 'cancelled', 'timed_out')),
  step                integer     NOT NULL CHECK (step >= 0),
  claim_epoch         bigint      NOT NULL DEFAULT 0,
  last_seq            bigint      NOT NULL CHECK (last_seq >= 0),
  -- events before this sequence were compacted away
  first_seq           bigint      NOT NULL DEFAULT 1,
  config              jsonb       NOT NULL,
  usage               jsonb       NOT NULL,
  deadline_at         bigint,
  wait_until          bigint,
  parent_run_id       text,
  forked_from_run_id  text,
  forked_from_seq     bigint,
  error               jsonb,
  idempotency_key     text,
  created_at          bigint      NOT NULL,
  updated_at          bigint      NOT NULL
);

CREATE INDEX runs_status_idx ON fibergraph.runs (status, created_at DESC);
CREATE INDEX runs_graph_idx ON fibergraph.runs (graph_id, created_at DESC);
CREATE INDEX runs_tenant_idx ON fibergraph.runs (tenant, created_at DESC);
CREATE INDEX runs_created_idx ON fibergraph.runs (created_at DESC, run_id DESC);
CREATE INDEX runs_wait_idx ON fibergraph.runs (wait_until) WHERE status = 'waiting' AND wait_until IS NOT NULL;
CREATE INDEX runs_parent_idx ON fibergraph.runs (parent_run_id) WHERE parent_run_id IS NOT NULL;
CREATE UNIQUE INDEX runs_idempotency_idx ON fibergraph.runs (tenant, idempotency_key) WHERE idempotency_key IS NOT NULL;

CREATE TABLE fibergraph.events (
  run_id  text    NOT NULL REFERENCES fibergraph.runs (run_id) ON DELETE CASCADE,
  seq     bigint  NOT NULL,
  step    integer NOT NULL,
  tag     text    NOT NULL,
  at      bigint  NOT NULL,
  body    jsonb   NOT NULL,
  PRIMARY KEY (run_id, seq)
);

CREATE TABLE fibergraph.checkpoints (
  run_id      text    NOT NULL REFERENCES fibergraph.runs (run_id) ON DELETE CASCADE,
  seq         bigint  NOT NULL,
  step        integer NOT NULL,
  state       jsonb   NOT NULL,
  frontier    jsonb   NOT NULL,
  pending     jsonb   NOT NULL,
  interrupts  jsonb   NOT NULL,
  barriers    jsonb   NOT NULL,
  created_at  bigint  NOT NULL,
  PRIMARY KEY (run_id, seq)
);
