-- History of the fleet: periodic snapshots and the audit log.
-- Every DATETIME column holds UTC. The binary collation keeps worker ids and
-- pool names case-sensitive, as they are in Redis, so "W-1" and "w-1" never
-- collide in a primary key.

-- One row per snapshot. Its primary key lets at most one snapshot exist per
-- period, whichever replica takes it. It also stores the fleet-wide totals so
-- that the all-pools chart reads one row per period instead of one per pool.
-- elapsed_ms is the time since the previous snapshot was taken, the span
-- that the processed and failed deltas cover; NULL for the first snapshot.
CREATE TABLE snapshot_periods (
    period     DATETIME(3)     NOT NULL,
    taken_at   DATETIME(3)     NOT NULL,
    elapsed_ms BIGINT UNSIGNED NULL,
    pools      INT UNSIGNED    NOT NULL,
    workers    INT UNSIGNED    NOT NULL,
    running    INT UNSIGNED    NOT NULL,
    paused     INT UNSIGNED    NOT NULL,
    draining   INT UNSIGNED    NOT NULL,
    stopped    INT UNSIGNED    NOT NULL,
    stale      INT UNSIGNED    NOT NULL,
    processed  DOUBLE          NOT NULL,
    failed     DOUBLE          NOT NULL,
    PRIMARY KEY (period)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- processed and failed are the jobs done since the previous snapshot;
-- error_rate is in percent.
CREATE TABLE pool_snapshots (
    period        DATETIME(3)  NOT NULL,
    taken_at      DATETIME(3)  NOT NULL,
    pool          VARCHAR(128) NOT NULL,
    desired_count INT UNSIGNED NULL,
    running       INT UNSIGNED NOT NULL,
    paused        INT UNSIGNED NOT NULL,
    draining      INT UNSIGNED NOT NULL,
    stopped       INT UNSIGNED NOT NULL,
    stale         INT UNSIGNED NOT NULL,
    processed     DOUBLE       NOT NULL,
    failed        DOUBLE       NOT NULL,
    error_rate    DOUBLE       NOT NULL,
    PRIMARY KEY (period, pool),
    KEY pool_snapshots_pool_period (pool, period)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- processed and failed are the worker's cumulative counters as reported.
CREATE TABLE worker_snapshots (
    period           DATETIME(3)     NOT NULL,
    worker_id        VARCHAR(128)    NOT NULL,
    pool             VARCHAR(128)    NOT NULL,
    status           VARCHAR(16)     NOT NULL,
    desired_state    VARCHAR(16)     NOT NULL,
    stale            BOOLEAN         NOT NULL,
    heartbeat_age_ms BIGINT UNSIGNED NOT NULL,
    processed        DOUBLE          NOT NULL,
    failed           DOUBLE          NOT NULL,
    memory_mb        DOUBLE          NOT NULL,
    PRIMARY KEY (period, worker_id),
    KEY worker_snapshots_worker_period (worker_id, period)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- Listing is newest first by id, so each filter index ends in id.
CREATE TABLE audit_log (
    id           BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    at           DATETIME(3)     NOT NULL,
    actor        VARCHAR(255)    NOT NULL,
    source       VARCHAR(16)     NOT NULL,
    kind         VARCHAR(32)     NOT NULL,
    action       VARCHAR(64)     NOT NULL,
    worker_id    VARCHAR(128)    NOT NULL,
    pool         VARCHAR(128)    NOT NULL,
    before_value TEXT            NOT NULL,
    after_value  TEXT            NOT NULL,
    reason       TEXT            NOT NULL,
    PRIMARY KEY (id),
    KEY audit_log_worker (worker_id, id),
    KEY audit_log_pool (pool, id),
    KEY audit_log_actor (actor, id),
    KEY audit_log_kind (kind, id),
    KEY audit_log_at (at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
