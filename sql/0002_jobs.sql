-- The durable job queue (claimed with FOR UPDATE SKIP LOCKED) and durable timers.

CREATE TABLE fibergraph.jobs (
  job_id        text    PRIMARY KEY,
  run_id        text    NOT NULL REFERENCES fibergraph.runs (run_id) ON DELETE CASCADE,
  tenant        text    NOT NULL,
  kind          text    NOT NULL DEFAULT 'run',
  priority      integer NOT NULL DEFAULT 0,
  status        text    NOT NULL DEFAULT 'queued'
    CHECK (status IN ('queued', 'claimed', 'done', 'dead')),
  available_at  bigint  NOT NULL,
  attempts      integer NOT NULL DEFAULT 0,
  max_attempts  integer NOT NULL DEFAULT 10,
  lease_until   bigint,
  claimed_by    text,
  claim_epoch   bigint,
  last_error    text,
  created_at    bigint  NOT NULL,
  updated_at    bigint  NOT NULL
);

CREATE INDEX jobs_ready_idx ON fibergraph.jobs (tenant, priority DESC, available_at) WHERE status = 'queued';
CREATE INDEX jobs_lease_idx ON fibergraph.jobs (lease_until) WHERE status = 'claimed';
CREATE INDEX jobs_run_idx ON fibergraph.jobs (run_id);

CREATE TABLE fibergraph.timers (
  timer_id    text    PRIMARY KEY,
  run_id      text    NOT NULL REFERENCES fibergraph.runs (run_id) ON DELETE CASCADE,
  kind        text    NOT NULL,
  due_at      bigint  NOT NULL,
  payload     jsonb   NOT NULL DEFAULT '{}'::jsonb,
  fired_at    bigint,
  created_at  bigint  NOT NULL
);

CREATE INDEX timers_due_idx ON fibergraph.timers (due_at) WHERE fired_at IS NULL;
