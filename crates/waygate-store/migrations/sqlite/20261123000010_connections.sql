-- Connections recorded while a `$disconnect` route is configured, so that `$disconnect` is
-- delivered at least once: a row is deleted only after delivery; rows of a dead instance are
-- adopted by a live one.
CREATE TABLE "GatewayConnection" (
    "id"          TEXT PRIMARY KEY,
    "instanceId"  TEXT NOT NULL,
    "userId"      TEXT,
    "connectedAt" INTEGER NOT NULL,
    "closedAt"    INTEGER,
    "closeCode"   INTEGER,
    "attempts"    INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX "GatewayConnection_instanceId_closedAt_idx" ON "GatewayConnection"("instanceId", "closedAt");
