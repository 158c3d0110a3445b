-- Per-call usage records, the agent registry and MCP server registrations.

CREATE TABLE fibergraph.usage_records (
  id             bigserial PRIMARY KEY,
  run_id         text     NOT NULL REFERENCES fibergraph.runs (run_id) ON DELETE CASCADE,
  tenant         text     NOT NULL,
  node           text     NOT NULL,
  model          text     NOT NULL,
  input_tokens   integer  NOT NULL,
  output_tokens  integer  NOT NULL,
  usd            numeric(14, 6) NOT NULL,
  at             bigint   NOT NULL
);

CREATE INDEX usage_records_run_idx ON fibergraph.usage_records (run_id);
CREATE INDEX usage_records_tenant_idx ON fibergraph.usage_records (tenant, at);

CREATE TABLE fibergraph.agents (
  agent_id    text   PRIMARY KEY,
  tenant      text   NOT NULL,
  name        text   NOT NULL,
  version     integer NOT NULL DEFAULT 1,
  config      jsonb  NOT NULL,
  created_at  bigint NOT NULL,
  updated_at  bigint NOT NULL,
  UNIQUE (tenant, name, version)
);

CREATE TABLE fibergraph.mcp_servers (
  server_id   text   PRIMARY KEY,
  tenant      text   NOT NULL,
  name        text   NOT NULL,
  transport   jsonb  NOT NULL,
  allowlist   jsonb  NOT NULL DEFAULT '[]'::jsonb,
  enabled     boolean NOT NULL DEFAULT true,
  created_at  bigint NOT NULL,
  updated_at  bigint NOT NULL,
  UNIQUE (tenant, name)
);
