-- waygate schema (PostgreSQL). Timestamps are epoch milliseconds. Identifiers follow the seed's
-- Prisma naming ("GatewayToolCall", camelCase columns) so operators' queries carry over.

CREATE TABLE "User" (
    "id"           TEXT PRIMARY KEY,
    "email"        TEXT NOT NULL UNIQUE,
    "passwordHash" TEXT NOT NULL,
    "createdAt"    BIGINT NOT NULL
);

CREATE TABLE "UserSession" (
    "tokenHash" TEXT PRIMARY KEY,
    "userId"    TEXT NOT NULL REFERENCES "User"("id") ON DELETE CASCADE,
    "createdAt" BIGINT NOT NULL,
    "expiresAt" BIGINT NOT NULL
);
CREATE INDEX "UserSession_expiresAt_idx" ON "UserSession"("expiresAt");

CREATE TABLE "GatewayInstance" (
    "id"          TEXT PRIMARY KEY,
    "startedAt"   BIGINT NOT NULL,
    "heartbeatAt" BIGINT NOT NULL,
    "draining"    BOOLEAN NOT NULL DEFAULT FALSE
);

CREATE TABLE "GatewayDevice" (
    "id"                TEXT PRIMARY KEY,
    "userId"            TEXT NOT NULL REFERENCES "User"("id") ON DELETE CASCADE,
    "name"              TEXT NOT NULL,
    "platform"          TEXT NOT NULL,
    "capabilities"      TEXT NOT NULL,
    "sessionTokenHash"  TEXT NOT NULL,
    "connectedInstance" TEXT,
    "createdAt"         BIGINT NOT NULL,
    "lastSeenAt"        BIGINT
);
CREATE INDEX "GatewayDevice_userId_idx" ON "GatewayDevice"("userId");
CREATE INDEX "GatewayDevice_connectedInstance_idx" ON "GatewayDevice"("connectedInstance");

CREATE TABLE "GatewayDeviceCapability" (
    "deviceId"   TEXT NOT NULL REFERENCES "GatewayDevice"("id") ON DELETE CASCADE,
    "userId"     TEXT NOT NULL,
    "capability" TEXT NOT NULL,
    PRIMARY KEY ("deviceId", "capability")
);
CREATE INDEX "GatewayDeviceCapability_userId_capability_idx" ON "GatewayDeviceCapability"("userId", "capability");

CREATE TABLE "GatewayToolCall" (
    "id"                 TEXT PRIMARY KEY,
    "userId"             TEXT NOT NULL,
    "requiredCapability" TEXT NOT NULL,
    "tool"               TEXT NOT NULL,
    "args"               TEXT NOT NULL,
    "deviceId"           TEXT,
    "assignedDeviceId"   TEXT,
    "status"             TEXT NOT NULL,
    "result"             TEXT,
    "errorCode"          TEXT,
    "errorMessage"       TEXT,
    "attempt"            BIGINT NOT NULL DEFAULT 0,
    "acceptedBy"         TEXT NOT NULL,
    "claimedBy"          TEXT,
    "leaseExpiresAt"     BIGINT,
    "createdAt"          BIGINT NOT NULL,
    "claimedAt"          BIGINT,
    "expiresAt"          BIGINT NOT NULL,
    "finishedAt"         BIGINT
);
CREATE INDEX "GatewayToolCall_status_createdAt_idx" ON "GatewayToolCall"("status", "createdAt");
CREATE INDEX "GatewayToolCall_userId_requiredCapability_status_idx" ON "GatewayToolCall"("userId", "requiredCapability", "status");
CREATE INDEX "GatewayToolCall_expiresAt_idx" ON "GatewayToolCall"("expiresAt");
CREATE INDEX "GatewayToolCall_finishedAt_idx" ON "GatewayToolCall"("finishedAt");
