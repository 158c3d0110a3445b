-- Creation order of jobs (within a millisecond too) and each tenant's latest claim, so claims
-- take tenants in turn.

ALTER TABLE fibergraph.jobs ADD COLUMN seq bigserial;

CREATE SEQUENCE fibergraph.claim_seq;

CREATE TABLE fibergraph.tenant_claims (
  tenant      text   PRIMARY KEY,
  last_claim  bigint NOT NULL
);
