DROP TABLE IF EXISTS audit_log;
DROP TABLE IF EXISTS worker_snapshots;
DROP TABLE IF EXISTS pool_snapshots;
DROP TABLE IF EXISTS snapshot_periods;
