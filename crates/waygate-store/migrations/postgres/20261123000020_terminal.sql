-- Terminal allocations: a user's right to open terminal sessions on one node.
CREATE TABLE "TerminalAllocation" (
    "id"        TEXT PRIMARY KEY,
    "userId"    TEXT NOT NULL,
    "nodeId"    TEXT NOT NULL,
    "tenantId"  TEXT NOT NULL,
    "projectId" TEXT NOT NULL,
    "command"   TEXT,
    "createdAt" BIGINT NOT NULL
);
CREATE INDEX "TerminalAllocation_userId_createdAt_idx" ON "TerminalAllocation"("userId", "createdAt");

-- Which instance holds each node agent's socket. Like device presence, an agent counts as
-- connected only while that instance's heartbeat in "GatewayInstance" is fresh.
CREATE TABLE "TerminalAgent" (
    "nodeId"      TEXT PRIMARY KEY,
    "instanceId"  TEXT NOT NULL,
    "connectedAt" BIGINT NOT NULL
);
